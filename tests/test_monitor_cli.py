"""`mineru-fit monitor` and `python monitor_and_optimize.py` as a user runs them: real console scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.monitor import NVML, metrics_text, serve_metrics

ROOT = Path(__file__).resolve().parent.parent
MINERU_FIT = Path(sys.executable).parent / "mineru-fit"


def run(*args: str, script: Path = MINERU_FIT, prefix: tuple[str, ...] = ("monitor",), timeout: float = 60,
        **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "MINERU_DEVICE_MODE")}
    environ.update(COLUMNS="160", NO_COLOR="1", MINERU_FIT_STATE_DIR=str(ROOT / ".no-such-state"), **env)
    argv = [str(script), *prefix, *args] if script == MINERU_FIT else [sys.executable, str(script), *args]
    result = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=timeout, cwd=ROOT)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_once_json_without_a_gpu_is_an_empty_list_with_a_reason() -> None:
    result = run("--once", "--json", "--simulate", str(NVML / "nvml_missing.json"))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["schema"] == "mineru-fit/monitor" and body["version"] == 1
    assert body["gpus"] == [] and body["reason"] == "NVML library not found (no NVIDIA driver installed)"


def test_this_machine_once_json_exits_0() -> None:
    result = run("--once", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    if body["gpus"]:
        pytest.skip("this machine has a GPU: the no-GPU answer cannot be seen here")
    assert body["reason"]


def test_live_view_without_a_gpu_says_so() -> None:
    result = run("--count", "2", "--interval", "0.05", "--simulate", str(NVML / "nvml_missing.json"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("no CUDA GPU found: NVML library not found") == 2
    assert "Ctrl-C to stop" in result.stdout


def test_guide_script_forwards_to_the_monitor() -> None:
    result = run("--once", "--json", "--simulate", str(NVML / "four_gpu_l4.json"), script=ROOT / "monitor_and_optimize.py")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert [g["index"] for g in body["gpus"]] == [0, 1, 2, 3]
    assert {a["rule"] for a in body["advice"]} == {"co-tenant"}


def test_engine_url_joins_a_live_engine_with_the_gpu(tmp_path: Path) -> None:
    log = tmp_path / "m.jsonl"
    with serve_metrics({"/metrics": metrics_text("sglang_kv_high.prom")}) as base:
        result = run("--json", "--count", "2", "--interval", "0.05", "--log", str(log), "--engine-url", base,
                     "--simulate", str(NVML / "rtx4090_shared_sglang.json"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2 and lines == [json.loads(line) for line in log.read_text().splitlines()]
    engine = lines[0]["engines"][0]
    assert engine["engine"] == "sglang" and engine["kv_cache_usage"] == 0.94 and engine["requests_waiting"] == 3
    [kv] = [a for a in lines[0]["advice"] if a["rule"] == "kv-headroom"]
    assert kv["action"] == "raise --mem-fraction-static by 0.2 (about 5.0 GiB, +436,906 KV tokens)"


@pytest.mark.parametrize("args, message", [
    (("--once", "--interval", "0"), "--interval 0 must be above 0 seconds"),
    (("--once", "--engine-url", "ftp://x"), "is not an http(s) URL"),
    (("--once", "--plan", "/nonexistent/plan.json"), "no such file"),
    (("--once", "--simulate", "/nonexistent.json"), "no such file"),
])
def test_bad_flags_are_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_plan_file_from_plan_json_is_accepted(tmp_path: Path) -> None:
    plan = subprocess.run([str(MINERU_FIT), "plan", "--vram", "22", "--level", "none", "--json"],
                          capture_output=True, text=True, check=True).stdout
    (tmp_path / "plan.json").write_text(plan)
    result = run("--once", "--json", "--plan", str(tmp_path / "plan.json"), "--simulate", str(NVML / "four_gpu_l4.json"))
    assert result.returncode == 0, result.stderr
    assert any(a["severity"] == "warn" and "you run none" in a["action"] for a in json.loads(result.stdout)["advice"])


def test_watch_runs_the_command_and_propagates_its_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "peaks.json"
    result = run("watch", "--out", str(out), "--", sys.executable, "-c", "import sys; print('hi'); sys.exit(5)")
    assert result.returncode == 5 and "hi" in result.stdout
    body = json.loads(out.read_text())
    assert body["schema"] == "mineru-fit/watch" and body["exit_code"] == 5
    if body["samples"] == 0:  # no GPU here
        assert body["reason"].startswith("no GPU to sample") and "no GPU samples" in result.stderr


def test_watch_without_a_command_is_a_usage_error() -> None:
    result = run("watch")
    assert result.returncode == 2 and "needs a command" in result.stderr
