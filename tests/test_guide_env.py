"""The guide's launcher, environment, monitoring and batch lines, each as written (tests/guide/GUIDE.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from guide.env import environ, isolate
from guide.lines import covers, line

ROOT = Path(__file__).parent.parent
NVML = Path(__file__).parent / "data" / "nvml"
BIN = Path(sys.executable).parent
LAPTOP_8GB = NVML / "rtx4060_laptop_8gb.json"


def shell(text: str, *extra: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The guide's line as a shell runs it from the checkout (plus `extra` arguments)."""
    argv = line(text).argv
    if argv[0] in ("mineru-fit", "mineru-sglang-server"):
        argv[0] = str(BIN / argv[0])
    elif argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run([*argv, *extra], capture_output=True, text=True, env=env or environ(), cwd=cwd,
                          timeout=timeout)


def in_process(app: Any, *args: str, env: dict[str, str]) -> Any:
    from typer.testing import CliRunner

    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return isolate(monkeypatch)


# --- 方案2: the launcher ------------------------------------------------------------------------


@covers("chmod +x start_mineru_optimized.sh")
def test_chmod_makes_the_launcher_executable_and_the_checkout_ships_it_so(tmp_path: Path) -> None:
    assert os.access(ROOT / "start_mineru_optimized.sh", os.X_OK)
    copy = tmp_path / "start_mineru_optimized.sh"
    shutil.copy(ROOT / "start_mineru_optimized.sh", copy)
    copy.chmod(0o644)
    assert shell("chmod +x start_mineru_optimized.sh", cwd=tmp_path).returncode == 0
    assert os.access(copy, os.X_OK)


@covers("./start_mineru_optimized.sh sglang")
def test_launcher_sglang_plans_the_8gb_card_and_says_in_one_line_why_not_here() -> None:
    here = shell("./start_mineru_optimized.sh sglang")
    if here.returncode == 2:  # no CUDA GPU on this machine: one line, nothing started
        assert here.stderr.strip().splitlines() == [
            "error: sglang needs a CUDA GPU and none was found — use --engine builtin (runs on the CPU), "
            "or plan for a card with --vram GB or --simulate FILE"]
    card = shell("./start_mineru_optimized.sh sglang", "--dry-run", "--simulate", str(LAPTOP_8GB))
    assert card.returncode == 0, card.stderr
    assert "-m sglang.launch_server" in card.stdout and "level " in card.stdout


@covers("./start_mineru_optimized.sh api")
def test_launcher_api_starts_for_real_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fixtures.servers import free_port, wait_healthy

    port = free_port()  # the only addition to the guide's line: this shared machine may use 8000
    argv = [str(ROOT / "start_mineru_optimized.sh"), "api", "--port", str(port), "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(argv, env=environ(MINERU_FIT_STATE_DIR=str(tmp_path / "state")), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout_s=120, proc=proc)
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err


@covers("./start_mineru_optimized.sh gradio")
def test_launcher_gradio_serves_the_ui_beside_the_api() -> None:
    result = shell("./start_mineru_optimized.sh gradio", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "# service: http://127.0.0.1:7860 " in result.stdout
    # Started for real, the UI is driven in a browser by tests/test_service_ui.py.


# --- 方案3: environment variables ---------------------------------------------------------------

BLOCK = "mineru-sglang-server"  # the line that starts the server after the block's exports


@covers("export PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128", "export CUDA_LAUNCH_BLOCKING=1",
        "export MINERU_VIRTUAL_VRAM_SIZE=4", "export MINERU_DEVICE_MODE=cuda", BLOCK)
def test_the_env_block_then_the_server_on_an_8gb_card(clean: pytest.MonkeyPatch) -> None:
    from mineru_fit.cli.guide_cmd import guide_app

    env = line(BLOCK).env
    assert env == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128", "CUDA_LAUNCH_BLOCKING": "1",
                   "MINERU_VIRTUAL_VRAM_SIZE": "4", "MINERU_DEVICE_MODE": "cuda"}
    for card in (["--vram", "8"], ["--simulate", str(LAPTOP_8GB)]):
        result = in_process(guide_app, *card, "--dry-run", env=env)
        assert result.exit_code == 0, (result.output, result.exception)
        out = result.stdout
        # MINERU_VIRTUAL_VRAM_SIZE=4: the budget, below the card.
        assert "budget (MINERU_VIRTUAL_VRAM_SIZE=4 (below the " in out
        # PYTORCH_CUDA_ALLOC_CONF: honoured (the engine gets it as given) and explained beside our default.
        assert "  PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128" in out.splitlines()
        assert "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128 is yours and passed on as given (unset, the built-in " \
               "engine gets expandable_segments:True" in out
        # CUDA_LAUNCH_BLOCKING: flagged where the server starts.
        assert "# warning: CUDA_LAUNCH_BLOCKING: every CUDA kernel launch waits for the GPU to finish it: a large " \
               "slowdown meant for debugging (it saves no memory) — unset it" in out.splitlines()


@covers("export MINERU_DEVICE_MODE=cuda")
def test_device_mode_cuda_without_a_gpu_is_one_line_not_a_silent_cpu_run(clean: pytest.MonkeyPatch) -> None:
    import mineru_fit.cli.commands  # noqa: F401
    from mineru_fit.cli.app import app
    from mineru_fit.devices import read_inventory

    if read_inventory("cuda").has_gpu:
        pytest.skip("this machine has a CUDA GPU: MINERU_DEVICE_MODE=cuda is satisfied here")
    result = in_process(app, "serve", "--engine", "builtin", "--dry-run", env={"MINERU_DEVICE_MODE": "cuda"})
    message = str(result.exception)
    assert message.startswith("MINERU_DEVICE_MODE=cuda but no CUDA GPU was found") and "(or set cpu)" in message
    assert "\n" not in message


@covers("export CUDA_LAUNCH_BLOCKING=1")
def test_launch_blocking_is_flagged_by_the_doctor_and_the_monitor(clean: pytest.MonkeyPatch) -> None:
    import mineru_fit.cli.commands  # noqa: F401
    from mineru_fit.cli.app import app
    from mineru_fit.doctor import env_findings

    [finding] = [f for f in env_findings({"CUDA_LAUNCH_BLOCKING": "1"}) if f.topic == "CUDA_LAUNCH_BLOCKING"]
    assert finding.severity == "warn" and "a large slowdown meant for debugging" in finding.message
    result = in_process(app, "monitor", "--once", "--json", "--simulate", str(LAPTOP_8GB),
                        env={"CUDA_LAUNCH_BLOCKING": "1"})
    assert result.exit_code == 0, (result.output, result.exception)
    [advice] = [a for a in json.loads(result.stdout)["advice"] if a["rule"] == "cuda-launch-blocking"]
    assert "a large slowdown meant for debugging" in advice["message"] and advice["command"] == "unset CUDA_LAUNCH_BLOCKING"


@covers("export PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128")
def test_the_allocator_setting_reaches_every_engine_as_given(clean: pytest.MonkeyPatch) -> None:
    from mineru_fit.doctor import env_findings
    from mineru_fit.models import default_spec
    from mineru_fit.planner import Hardware, PlanRequest, make_report

    for engine in ("builtin", "sglang", "vllm"):
        plan = make_report(default_spec(), Hardware.from_vram(8), PlanRequest(engine=engine),
                           user_alloc_conf="max_split_size_mb:128").plan
        assert plan.env["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"
    ours = make_report(default_spec(), Hardware.from_vram(8), PlanRequest(engine="builtin")).plan
    assert ours.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"  # our default, when unset
    [info] = env_findings({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"})
    assert info.severity == "info" and "blocks above 128 MB whole" in info.message


# --- monitoring -----------------------------------------------------------------------------------


@covers("pip install GPUtil")
def test_the_monitor_needs_no_gputil() -> None:
    # The guide installs GPUtil for its monitor script; ours reads NVML (nvidia-ml-py) instead, so the
    # script works with GPUtil absent (here: made unimportable) as with it installed.
    code = ("import runpy, sys; sys.modules['GPUtil'] = None; sys.argv = ['monitor_and_optimize.py', '--once', "
            f"'--json', '--simulate', {str(LAPTOP_8GB)!r}]; runpy.run_path('monitor_and_optimize.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ(), cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gpus"][0]["name"] == "NVIDIA GeForce RTX 4060 Laptop GPU"


@covers("python monitor_and_optimize.py")
def test_the_monitor_script_runs_live_until_ctrl_c() -> None:
    argv = line("python monitor_and_optimize.py").argv
    # PYTHONFAULTHANDLER: should Ctrl-C ever not end it, SIGABRT makes it print every thread's stack.
    proc = subprocess.Popen([sys.executable, *argv[1:]], env={**environ(), "PYTHONFAULTHANDLER": "1"}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "Ctrl-C to stop" not in seen and time.monotonic() < deadline and proc.poll() is None:
            seen += os.read(proc.stdout.fileno(), 65536).decode(errors="replace")  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rest, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # seen once in a full run (2026-12-01), never alone: say where it hung
            proc.send_signal(signal.SIGABRT)
            rest, err = proc.communicate(timeout=30)
            pytest.fail(f"still running 30 s after Ctrl-C; where it was:\n{err[-4000:]}")
    assert "Ctrl-C to stop" in seen and "Advice" in seen
    assert proc.returncode in (0, 130) and "Traceback" not in err


@covers("nvidia-smi", "nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv")
def test_nvidia_smis_views_are_in_mineru_fit_devices(clean: pytest.MonkeyPatch) -> None:
    import mineru_fit.cli.commands  # noqa: F401
    from mineru_fit.cli.app import app

    # NVIDIA's own tool: the same per-process pid, name and memory come from `mineru-fit devices`.
    result = in_process(app, "devices", "--json", "--simulate", str(NVML / "rtx4090_shared_sglang.json"), env={})
    assert result.exit_code == 0, result.output
    procs = json.loads(result.stdout)["gpus"][0]["processes"]
    assert {(p["pid"], p["name"]) for p in procs} >= {(5120, "sglang::scheduler"), (6001, "python")}
    assert all(p["used_bytes"] > 0 for p in procs)
    if shutil.which("nvidia-smi"):
        for text in ("nvidia-smi", "nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv"):
            done = subprocess.run(line(text).argv, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("pid, process_name, used_gpu_memory")


# --- batch size follows the memory the guide says is there ----------------------------------------


@covers("export MINERU_VIRTUAL_VRAM_SIZE=8", "export MINERU_VIRTUAL_VRAM_SIZE=12", "export MINERU_VIRTUAL_VRAM_SIZE=16")
def test_virtual_vram_sets_the_budget_and_the_batch_follows_it(clean: pytest.MonkeyPatch) -> None:
    import mineru_fit.cli.commands  # noqa: F401
    from mineru_fit.cli.app import app

    chosen = []
    for text in ("export MINERU_VIRTUAL_VRAM_SIZE=8", "export MINERU_VIRTUAL_VRAM_SIZE=12",
                 "export MINERU_VIRTUAL_VRAM_SIZE=16"):
        name, value = line(text).export  # type: ignore[misc]
        result = in_process(app, "plan", "--vram", "24", "--engine", "builtin", "--concurrency", "64", "--json",
                            env={name: value})
        assert result.exit_code == 0, (result.output, result.exception)
        plan = json.loads(result.stdout)["plan"]
        assert plan["budget_bytes"] == int(value) * 2**30 and plan["fits"]
        assert plan["predicted_peak_bytes"] <= plan["budget_bytes"] * 0.97
        chosen.append((plan["level"], plan["batch_size"]))
    batches = [batch for _, batch in chosen]
    assert batches == sorted(batches) and batches[0] < batches[-1], chosen
