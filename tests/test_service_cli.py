"""`mineru-fit start api|gradio`, `api`, `ui` as a user runs them: what they would start, refusals, the token."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

import httpx  # noqa: E402
from fixtures.service import BIN, api_process, service_env  # noqa: E402


def mineru_fit(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mineru-fit"), *args], capture_output=True, text=True, timeout=60,
                          env=service_env(**env))


def test_start_api_dry_run_says_what_would_serve(tmp_path: Path) -> None:
    result = mineru_fit("start", "api", "--dry-run", "--data-dir", str(tmp_path / "d"), "--max-upload-mb", "50")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"# service: http://127.0.0.1:8000 (API docs /docs), data dir {tmp_path / 'd'}" in out
    assert "plan's concurrency" in out and "50 MiB" in out
    assert "# token: none" in out and "# engine: none" in out
    assert not (tmp_path / "d").exists()  # nothing was started or written


def test_ui_dry_run_and_an_outside_address_without_a_token_warns() -> None:
    result = mineru_fit("ui", "--dry-run", "--host", "0.0.0.0", "--server", "http://127.0.0.1:30000")
    assert result.returncode == 0, result.stderr
    assert "# service: http://0.0.0.0:7860 (UI /ui/, API docs /docs)" in result.stdout
    assert "# engine: server — --server http://127.0.0.1:30000" in result.stdout
    assert "# warning: listening on 0.0.0.0 without a token" in result.stdout
    with_token = mineru_fit("ui", "--dry-run", "--host", "0.0.0.0", MINERU_FIT_API_TOKEN="t0ken")
    assert "required (MINERU_FIT_API_TOKEN)" in with_token.stdout and "warning" not in with_token.stdout
    assert "t0ken" not in with_token.stdout


def test_a_short_context_service_warns_what_it_gives_up_as_serve_does() -> None:
    result = mineru_fit("start", "api", "--dry-run", "--engine", "sglang", "--vram", "8", "--max-model-len", "1024")
    assert result.returncode == 0, result.stderr
    assert "# warning: context 1024 shrinks MinerU's layout page to 756×756 px" in result.stdout


def test_level_flash_runs_without_an_engine() -> None:
    result = mineru_fit("start", "api", "--dry-run", "--level", "flash")
    assert result.returncode == 0 and "# engine: none — --level flash" in result.stdout


@pytest.mark.parametrize("args, message", [
    (("--server", "ftp://example.com"), "give the engine's URL"),
    (("--max-upload-mb", "0"), "must be positive"),
])
def test_bad_flags_are_one_line_and_exit_2(args, message) -> None:
    result = mineru_fit("start", "api", "--dry-run", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_taken_port_fails_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mineru_fit("api", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_the_token_from_the_environment_guards_the_running_api(tmp_path: Path) -> None:
    with api_process(tmp_path / "data", "--workers", "1", MINERU_FIT_API_TOKEN="t0ken") as (base, _proc):
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"authorization": "Bearer t0ken"}).status_code == 200
