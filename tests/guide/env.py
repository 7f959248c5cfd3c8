"""A clean environment for running the guide's lines: none of this shell's MINERU_*, CUDA_*, PYTORCH_*
or SGLANG_* settings, and no config file — only what a line's own block exports."""

from __future__ import annotations

import os

import pytest

PREFIXES = ("MINERU_", "CUDA_", "PYTORCH_", "SGLANG_")
NO_CONFIG = "/nonexistent/config.toml"


def isolate(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process's environment, cleaned (restored after the test)."""
    for key in list(os.environ):
        if key.startswith(PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MINERU_FIT_CONFIG", NO_CONFIG)
    return monkeypatch


def environ(**extra: str) -> dict[str, str]:
    """A child process's environment, cleaned, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    env.update(MINERU_FIT_CONFIG=NO_CONFIG, COLUMNS="200", NO_COLOR="1", **extra)
    return env
