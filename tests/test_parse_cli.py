"""`mineru-fit parse` and `mineru-fit sample-pdf` as a user runs them: the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

MINERU_FIT = Path(sys.executable).parent / "mineru-fit"


def run(*args: str, cwd: Path, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU_", "CUDA_", "PYTORCH_", "HF_"))}
    # An empty hub cache: on this machine no model is downloaded, whatever the developer has.
    env.update(COLUMNS="200", NO_COLOR="1", HF_HOME=str(cwd / "hf"), XDG_CACHE_HOME=str(cwd / "cache"),
               MINERU_FIT_CONFIG=str(cwd / "none.toml"), MODELSCOPE_CACHE=str(cwd / "ms"), **extra)
    return subprocess.run([str(MINERU_FIT), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_the_demo_flow_picks_flash_offline_says_why_and_where_the_markdown_is(tmp_path: Path) -> None:
    made = run("sample-pdf", "sample.pdf", cwd=tmp_path)
    assert made.returncode == 0 and (tmp_path / "sample.pdf").read_bytes().startswith(b"%PDF-")
    result = run("parse", "sample.pdf", "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tier: flash" in result.stderr and "no MinerU2.5 model here" in result.stderr
    assert "out/sample/flash/sample.md" in result.stderr
    assert "# mineru-fit sample document" in (tmp_path / "out" / "sample" / "flash" / "sample.md").read_text()
    again = run("parse", "sample.pdf", "-o", "out", "--json", "--no-progress", cwd=tmp_path)
    report = json.loads(again.stdout)
    assert report["status"] == "success" and report["pages_ok"] == 3
    assert "3 page(s) resumed" in " ".join(report["files"][0]["notes"])


def test_bad_files_get_one_line_each_and_exit_1_without_a_traceback(tmp_path: Path) -> None:
    run("sample-pdf", "good.pdf", cwd=tmp_path)
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "page.html.pdf").write_text("<html><body>not a pdf</body></html>")
    result = run("parse", "empty.pdf", "page.html.pdf", "good.pdf", "gone.pdf", "-o", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for text in ("empty (0 bytes)", "looks like an HTML page", "does not exist", "good.pdf: 3/3 pages"):
        assert text in result.stderr, text
    assert (tmp_path / "out" / "good" / "flash" / "good.md").is_file()


@pytest.mark.parametrize("args, message", [
    (("--pages", "2-1"), "--pages"),
    (("--tier", "vlm"), "models download"),
    (("--tier", "flash", "--server", "http://127.0.0.1:9"), "drop --server"),
    (("--tier", "fast"), "--tier fast"),
])
def test_usage_errors_exit_2_with_what_to_do(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4")
    result = run("parse", "a.pdf", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    run("sample-pdf", "s.pdf", cwd=tmp_path)
    result = run("parse", "s.pdf", "--server", "http://127.0.0.1:9", "-o", "out", cwd=tmp_path)
    assert result.returncode == 1 and "does not answer" in result.stderr and "Traceback" not in result.stderr


def test_parse_through_a_running_builtin_server(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from fixtures.servers import free_port, running_builtin
    from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

    from mineru_fit.engines.builtin.options import BuiltinOptions

    model = build_tiny_qwen2vl(tmp_path / "tiny")
    run("sample-pdf", "s.pdf", cwd=tmp_path)
    options = BuiltinOptions(model=str(model), device="cpu", dtype="float32", port=free_port(), max_model_len=2048,
                             max_new_tokens=8, max_batch_size=4)
    with running_builtin(options) as (base, _):
        result = run("parse", "s.pdf", "--server", base, "-o", "out", "--dpi", "72", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tier: vlm" in result.stderr and "--server" in result.stderr
    report = json.loads(result.stdout)
    assert report["tier"] == "vlm" and report["pages_ok"] == 3
    pages = json.loads((tmp_path / "out" / "s" / "vlm" / "s_pages.json").read_text())
    assert [p["ok"] for p in pages] == [True, True, True]


def test_parse_in_process_with_a_local_model_folder(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

    model = build_tiny_qwen2vl(tmp_path / "tiny")
    run("sample-pdf", "s.pdf", cwd=tmp_path)
    result = run("parse", "s.pdf", "--model", str(model), "--max-new-tokens", "8", "--dpi", "72", "--concurrency", "2",
                 "-o", "out", cwd=tmp_path, MINERU_DEVICE_MODE="cpu")  # the CPU, also on a machine with a GPU
    assert result.returncode == 0, result.stderr
    assert "tier: vlm" in result.stderr and "level none fits" in result.stderr and "available RAM" in result.stderr
    pages = json.loads((tmp_path / "out" / "s" / "vlm" / "s_pages.json").read_text())
    assert [(p["ok"], p["level"], p["batch_size"]) for p in pages] == [(True, "none", 2)] * 3
    assert "warning:" not in result.stderr
    # A short context is accepted, and parse says what it gives up, as `plan` and `serve` do.
    short = run("parse", "s.pdf", "--model", str(model), "--max-new-tokens", "8", "--dpi", "72", "--pages", "1",
                "--max-model-len", "400", "-o", "short", cwd=tmp_path, MINERU_DEVICE_MODE="cpu")
    assert short.returncode == 0, short.stderr
    # 400 is below the tiny model's whole-layout context (544; 1657 for MinerU2.5).
    assert "warning: context 400 shrinks MinerU's layout page to" in short.stderr
    not_a_model = run("parse", "s.pdf", "--model", "s.pdf", cwd=tmp_path)
    assert not_a_model.returncode == 2 and "not a model folder" in not_a_model.stderr


def test_a_killed_run_resumes_from_its_checkpoints(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import signal
    import time

    from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

    model = build_tiny_qwen2vl(tmp_path / "tiny")
    run("sample-pdf", "s.pdf", cwd=tmp_path)
    args = ["parse", "s.pdf", "--model", str(model), "--dpi", "72", "--concurrency", "1", "--max-new-tokens", "150",
            "-o", "out", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU_", "CUDA_", "HF_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), MINERU_DEVICE_MODE="cpu", MINERU_FIT_CONFIG=str(tmp_path / "none.toml"))
    first = subprocess.Popen([str(MINERU_FIT), *args], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "out" / "s" / "vlm" / ".checkpoints"
    deadline = time.monotonic() + 90
    while not list(checkpoints.glob("page_*.json")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # no chance to clean up: only atomic checkpoints survive
    first.wait(timeout=30)
    done_before = sorted(p.name for p in checkpoints.glob("page_*.json"))
    assert done_before and not list(checkpoints.glob(".*.tmp"))
    second = run(*args, "--json", cwd=tmp_path, MINERU_DEVICE_MODE="cpu")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["pages_ok"] == 3
    pages = json.loads((tmp_path / "out" / "s" / "vlm" / "s_pages.json").read_text())
    resumed = [f"page_{p['page_idx']:05d}.json" for p in pages if p["resumed"]]
    assert resumed == done_before and 1 <= len(resumed) < 3


def test_the_flash_tier_imports_no_torch(tmp_path: Path) -> None:
    run("sample-pdf", "s.pdf", cwd=tmp_path)
    code = (f"import sys, runpy\nsys.argv = ['mineru-fit', 'parse', 's.pdf', '-o', 'out', '--no-progress']\n"
            f"try:\n    runpy.run_path({str(MINERU_FIT)!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('HEAVY:' + ','.join(m for m in ('torch', 'transformers', 'mineru_vl_utils') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU_", "HF_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), MINERU_FIT_CONFIG=str(tmp_path / "none.toml"))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", out.stderr
    assert (tmp_path / "out" / "s" / "flash" / "s.md").is_file()
