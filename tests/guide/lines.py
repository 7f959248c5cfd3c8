"""The guide's command and environment lines, read from its text, and which tests cover each.

tests/guide/GUIDE.md is the guide this project makes real (the project's public spec), kept
verbatim. Every line of every ```bash block — backslash continuations joined, comments dropped —
is a GuideLine; a test names the lines it covers with @covers("..."), and test_guide_lines.py fails
for a line no test names, so a new line in the guide shows up as an untested line.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, TypeVar

GUIDE = Path(__file__).with_name("GUIDE.md")
# The smallest card the guide names: lines under a heading without a size are tried there.
DEFAULT_CARD_GIB = 8

_FENCE = re.compile(r"^```(\w*)\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_CARD = re.compile(r"(\d+)\s*GB")
_EXPORT = re.compile(r"^export\s+([A-Za-z_][A-Za-z0-9_]*)=(\S*)$")


@dataclass(frozen=True)
class GuideLine:
    text: str                     # the command as one line, whitespace collapsed
    heading: str                  # the section it sits in
    block: int                    # which ```bash block (0-based)
    env: dict[str, str] = field(default_factory=dict)  # the block's exports before this line

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def card_gib(self) -> int:
        """The card size the guide's section names (8GB显存 -> 8), else the smallest it names."""
        found = _CARD.search(self.heading)
        return int(found.group(1)) if found else DEFAULT_CARD_GIB

    @property
    def export(self) -> tuple[str, str] | None:
        found = _EXPORT.match(self.text)
        return (found.group(1), found.group(2)) if found else None


def _strip_comment(line: str) -> str:
    # The guide's comments are whole-line or after two spaces; no command in it quotes a '#'.
    return re.sub(r"(^|\s)#.*$", "", line).strip()


def extract(text: str) -> list[GuideLine]:
    """Every command line of every bash block, in order."""
    lines: list[GuideLine] = []
    heading, block, fence, pending = "", -1, None, ""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        opened = _FENCE.match(raw.strip())
        if fence is None:
            if opened and opened.group(1) in ("bash", "sh", "shell"):
                fence, block, env, pending = opened.group(1), block + 1, {}, ""
            elif (found := _HEADING.match(raw)) is not None:
                heading = found.group(1).strip()
            continue
        if raw.strip() == "```":
            fence = None
            continue
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = " ".join(_strip_comment(pending + line).split())
        pending = ""
        if not command:
            continue
        guide_line = GuideLine(command, heading, block, dict(env))
        if guide_line.export:
            env[guide_line.export[0]] = guide_line.export[1]
        lines.append(guide_line)
    return lines


@lru_cache(maxsize=1)
def guide_lines() -> tuple[GuideLine, ...]:
    return tuple(extract(GUIDE.read_text(encoding="utf-8")))


def line(text: str) -> GuideLine:
    """The guide's line with this exact text (KeyError if the guide has no such line)."""
    for candidate in guide_lines():
        if candidate.text == text:
            return candidate
    raise KeyError(f"the guide has no line {text!r}")


# line text -> names of the tests that cover it
COVERED: dict[str, set[str]] = {}
F = TypeVar("F", bound=Callable[..., object])


def covers(*texts: str) -> Callable[[F], F]:
    """Mark a test as the test of these guide lines (each must be a line of the guide)."""
    def mark(test: F) -> F:
        for text in texts:
            COVERED.setdefault(text, set()).add(f"{test.__module__}::{test.__name__}")
        return test
    return mark
