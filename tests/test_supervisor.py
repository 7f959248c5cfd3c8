"""The supervisor end to end, with tests/fake_engine/fake_engine.py in place of SGLang and vLLM.

The fake replays recorded startup logs, listens on /health and starts a worker in its process
group (as the engines do), so a leftover process would show here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from mineru_fit.engines.launch import engine_command
from mineru_fit.engines.process import EngineProcess, healthy
from mineru_fit.engines.supervisor import LevelRun, Supervisor, SupervisorOptions
from mineru_fit.errors import EngineError
from mineru_fit.models import default_spec
from mineru_fit.planner import Hardware, PlanRequest, plan_levels

FAKE = Path(__file__).parent / "fake_engine" / "fake_engine.py"
MINERU_FIT = Path(sys.executable).parent / "mineru-fit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    """Not running: absent, or a zombie waiting for init (it holds no memory)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat[stat.rfind(")") + 2] == "Z"


def wait_for(check: Callable[[], object], timeout_s: float = 30.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith(("MINERU_", "CUDA_", "PYTORCH_", "FAKE_ENGINE_", "VLLM_")):
            monkeypatch.delenv(key)
    launcher = f"{sys.executable} {FAKE}"
    monkeypatch.setenv("MINERU_FIT_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MINERU_FIT_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("MINERU_FIT_SGLANG_EXECUTABLE", launcher)
    monkeypatch.setenv("MINERU_FIT_VLLM_EXECUTABLE", launcher)
    monkeypatch.setenv("FAKE_ENGINE_GRANDCHILD", "1")
    monkeypatch.setenv("FAKE_ENGINE_PIDFILE", str(tmp_path / "pids.json"))
    return tmp_path


def pids(state: Path) -> dict:
    return json.loads(wait_for(lambda: (state / "pids.json").exists() and (state / "pids.json").read_text()))


def run_records(state: Path) -> list[Path]:
    return sorted((state / "runs").glob("*.json")) if (state / "runs").is_dir() else []


def serve(state: Path, *args: str, **env: str) -> subprocess.Popen:
    out = open(state / "serve.out", "w")
    return subprocess.Popen([str(MINERU_FIT), "serve", *args], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **env}, text=True)


def output(state: Path) -> str:
    return (state / "serve.out").read_text()


def stop(proc: subprocess.Popen, signum: int) -> int:
    proc.send_signal(signum)
    return proc.wait(timeout=30)


def test_kv_too_small_steps_down_until_it_fits_then_sigterm_leaves_nothing(state: Path):
    port = free_port()
    proc = serve(state, "--engine", "sglang", "--vram", "8", "--port", str(port), "--health-timeout", "20",
                 FAKE_ENGINE_FAIL_ABOVE_CONTEXT="4096", FAKE_ENGINE_FAIL_AS="kv")
    try:
        record = json.loads(wait_for(lambda: run_records(state) and run_records(state)[0].read_text()))
        assert record["engine"] == "sglang" and record["level"] == "aggressive"
        assert record["base_url"] == f"http://127.0.0.1:{port}" and record["supervisor_pid"] == proc.pid
        assert healthy(record["base_url"] + "/health", timeout_s=5)
        engine = pids(state)
        assert engine["leader"] == record["pid"] and "--context-length" in engine["argv"]
        startup = json.loads(wait_for(lambda: list((state / "startups").glob("sglang-*.json")))[0].read_text())
        assert [a["outcome"] for a in startup["attempts"]] == ["kv_cache", "kv_cache", "healthy"]
        assert [a["level"] for a in startup["attempts"]] == ["none", "basic", "aggressive"]
        assert round(startup["measured"]["weights_bytes"] / 2**30, 2) == 2.21
        assert startup["measured"]["kv_cache_tokens"] == 65536
        assert startup["predicted"]["weights"] == record["plan"]["terms"]["weights"]
        assert Path(startup["log_path"]).read_text().count("Load weight end.") == 1
    finally:
        code = stop(proc, signal.SIGTERM)
    text = output(state)
    assert code == 0, text
    assert "attempt 1/3 failed: no room for the KV cache (RuntimeError: Not enough memory." in text
    assert "stepping down: none → basic" in text and "stepping down: basic → aggressive" in text
    assert "predicted    measured" in text and "stopping" in text
    assert run_records(state) == []
    assert wait_for(lambda: gone(engine["leader"]) and gone(engine["grandchild"]), 5)


def test_vllm_starts_at_once_passes_extra_flags_and_sigint_leaves_nothing(state: Path):
    port = free_port()
    proc = serve(state, "--engine", "vllm", "--vram", "24", "--level", "basic", "--port", str(port),
                 "--", "--enable-prefix-caching")
    try:
        wait_for(lambda: run_records(state))
        engine = pids(state)
        argv = engine["argv"]
        assert argv[-1] == "--enable-prefix-caching"
        assert argv[argv.index("--kv-cache-memory-bytes") + 1] == "805306368"
        assert argv[argv.index("--logits-processors") + 1] == "mineru_vl_utils:MinerULogitsProcessor"
    finally:
        code = stop(proc, signal.SIGINT)
    assert code == 0, output(state)
    log = next((state / "logs").glob("vllm-*-basic.log")).read_text()
    assert "Model loading took 2.1600 GiB" in log and "--enable-prefix-caching" in log.splitlines()[0]
    assert run_records(state) == []
    assert wait_for(lambda: gone(engine["leader"]) and gone(engine["grandchild"]), 5)


def test_a_crash_that_is_not_memory_stops_with_exit_1_and_no_orphan(state: Path):
    proc = serve(state, "--engine", "sglang", "--vram", "8", "--level", "basic", "--port", str(free_port()),
                 FAKE_ENGINE_SCENARIO="crash", FAKE_ENGINE_CRASH_AFTER_S="1.5")
    assert proc.wait(timeout=30) == 1
    text = output(state)
    assert "illegal memory access" in text and "not a memory problem" in text and "Traceback" not in text
    assert "attempt 2/3" not in text
    engine = pids(state)
    assert run_records(state) == []
    assert wait_for(lambda: gone(engine["leader"]) and gone(engine["grandchild"]), 5)


def test_out_of_memory_after_start_steps_down_and_gives_up_when_attempts_run_out(state: Path):
    proc = serve(state, "--engine", "vllm", "--vram", "24", "--port", str(free_port()), "--max-attempts", "2",
                 FAKE_ENGINE_SCENARIO="crash-oom", FAKE_ENGINE_CRASH_AFTER_S="1.5")
    assert proc.wait(timeout=30) == 1
    text = output(state)
    assert "attempt 1/2 failed: out of GPU memory (after start: torch.OutOfMemoryError" in text
    assert "stepping down: none → basic" in text
    assert "error: vllm ran out of memory at every level tried (none, basic)" in text
    assert run_records(state) == []


# --- in-process: exceptions, timeouts, engines that ignore SIGTERM -----------------------------

def level_run(level: str, port: int) -> LevelRun:
    plans = {p.level: p for p in plan_levels(default_spec(), Hardware.from_vram(8),
                                             PlanRequest(engine="sglang", port=port))}
    return LevelRun(plans[level], engine_command(plans[level], installed=None, launcher=[sys.executable, str(FAKE)]))


def test_an_exception_while_serving_still_ends_the_engine_group(state: Path):
    def report(text: str) -> None:
        if text.startswith("startup record"):
            raise RuntimeError("the terminal went away")

    supervisor = Supervisor([level_run("basic", free_port())], report, SupervisorOptions(health_timeout_s=20))
    with pytest.raises(RuntimeError, match="terminal went away"):
        supervisor.run()
    engine = pids(state)
    assert run_records(state) == []
    assert wait_for(lambda: gone(engine["leader"]) and gone(engine["grandchild"]), 5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_no_health_answer_in_time_is_an_error_and_nothing_is_left(state: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_ENGINE_SCENARIO", "hang")
    supervisor = Supervisor([level_run("basic", free_port())], lambda _: None,
                            SupervisorOptions(health_timeout_s=1.0, poll_interval_s=0.05))
    with pytest.raises(EngineError, match="no answer from http://127.0.0.1:.*/health within 1 s"):
        supervisor.run()
    engine = pids(state)
    assert wait_for(lambda: gone(engine["leader"]) and gone(engine["grandchild"]), 5)


def test_an_engine_that_ignores_sigterm_is_killed(state: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_ENGINE_SCENARIO", "hang")
    monkeypatch.setenv("FAKE_ENGINE_IGNORE_TERM", "1")
    proc = EngineProcess([sys.executable, str(FAKE), "--model-path", "m", "--port", str(free_port())], {},
                         state / "logs" / "ignore.log")
    engine = pids(state)
    started = time.monotonic()
    proc.stop(grace_s=0.5)
    assert time.monotonic() - started < 5
    assert proc.poll() == -signal.SIGKILL
    assert wait_for(lambda: gone(engine["leader"]) and gone(engine["grandchild"]), 5)
