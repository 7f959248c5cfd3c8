"""`mineru-fit serve`, `mineru-sglang-server` and `./start_mineru_optimized.sh` as a user runs them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NVML = Path(__file__).parent / "data" / "nvml"
BIN = Path(sys.executable).parent
SCRIPT = ROOT / "start_mineru_optimized.sh"


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU_", "CUDA_", "PYTORCH_", "FAKE_"))}
    environ.update(COLUMNS="200", NO_COLOR="1", MINERU_FIT_CONFIG="/nonexistent/config.toml", **env)
    return subprocess.run(list(argv), capture_output=True, text=True, env=environ, timeout=60, cwd=ROOT)


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(str(BIN / "mineru-fit"), "serve", *args, **env)


def command_line(stdout: str) -> list[str]:
    """The printed command, split as a shell would (env assignments first)."""
    lines = stdout.splitlines()
    return shlex.split(lines[lines.index("command:") + 1])


def plan_json(*args: str) -> dict:
    result = run(str(BIN / "mineru-fit"), "plan", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["plan"]


def test_serve_sglang_dry_run_prints_the_plans_exact_command_and_env():
    laptop = str(NVML / "rtx4060_laptop_8gb.json")
    result = serve("--engine", "sglang", "--dry-run", "--simulate", laptop)
    assert result.returncode == 0, result.stderr
    plan = plan_json("--engine", "sglang", "--simulate", laptop)
    words = command_line(result.stdout)
    env = [w for w in words if "=" in w and not w.startswith("-")][: len(plan["env"])]
    argv = words[len(env):]
    assert env == [f"{k}={v}" for k, v in plan["env"].items()]
    assert argv[1:3] == ["-m", "sglang.launch_server"] and argv[3:] == plan["argv"][3:]
    assert f"  SGLANG_IMAGE_MAX_PIXELS={plan['max_image_pixels']}" in result.stdout.splitlines()
    assert "SGLang is not installed here: flags checked against 0.5.10" in result.stdout
    assert f"level {plan['level']}" in result.stdout and "NVIDIA GeForce RTX 4060 Laptop GPU" not in result.stderr


def test_the_guides_command_dry_run():
    result = run(str(BIN / "mineru-sglang-server"), "--mem-fraction-static", "0.3", "--load-in-4bit",
                 "--max-model-len", "2048", "--dry-run", "--vram", "8")
    assert result.returncode == 0, result.stderr
    words = command_line(result.stdout)
    assert words[0] == "SGLANG_IMAGE_MAX_PIXELS=1073296"  # the 1036×1036 layout page, whole
    joined = " ".join(words)
    for part in ("-m sglang.launch_server --model-path opendatalab/MinerU2.5-2509-1.2B", "--context-length 2048",
                 "--mem-fraction-static 0.3", "--quantization bitsandbytes --load-format bitsandbytes",
                 "--enable-metrics"):
        assert part in joined


def test_guide_server_passes_unknown_sglang_options_through():
    result = run(str(BIN / "mineru-sglang-server"), "--vram", "8", "--dry-run", "--enable-torch-compile")
    assert result.returncode == 0, result.stderr
    assert command_line(result.stdout)[-1] == "--enable-torch-compile"


def test_vllm_dry_run_keeps_flags_after_double_dash_untouched_and_adds_mineru_logits_processor():
    result = serve("--engine", "vllm", "--vram", "24", "--level", "basic", "--dry-run", "--",
                   "--enable-prefix-caching", "--swap-space", "0")
    assert result.returncode == 0, result.stderr
    words = command_line(result.stdout)
    assert words[-3:] == ["--enable-prefix-caching", "--swap-space", "0"]
    assert words[1] == "serve" and words[2] == "opendatalab/MinerU2.5-2509-1.2B"
    assert "--logits-processors mineru_vl_utils:MinerULogitsProcessor" in " ".join(words)
    assert "# if memory runs out: aggressive → extreme" in result.stdout


def test_builtin_dry_run_prints_the_builtin_command_from_the_plan():
    result = serve("--engine", "builtin", "--vram", "8", "--dry-run")
    assert result.returncode == 0, result.stderr
    words = command_line(result.stdout)
    assert words[0] == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    assert words[1:5] == ["mineru-fit", "serve", "--engine", "builtin"]


def test_auto_without_a_gpu_serves_the_builtin_engine():
    result = serve("--dry-run", "--simulate", str(NVML / "nvml_missing.json"))
    assert result.returncode == 0, result.stderr
    assert "# engine: builtin (no CUDA GPU" in result.stdout
    assert "MINERU_DEVICE_MODE=cpu" in result.stdout


@pytest.mark.parametrize("engine, tp, dp", [("sglang", "--tp-size 2", "--dp-size 2"),
                                            ("vllm", "--tensor-parallel-size 2", "--data-parallel-size 2")])
def test_multi_gpu_maps_tp_and_dp_per_engine(engine: str, tp: str, dp: str):
    result = serve("--engine", engine, "--dry-run", "--simulate", str(NVML / "four_gpu_l4.json"),
                   "--tp-size", "2", "--dp-size", "2", "--level", "basic")
    assert result.returncode == 0, result.stderr
    line = " ".join(command_line(result.stdout))
    assert tp in line and dp in line


@pytest.mark.parametrize("argv, message", [
    (["mineru-sglang-server", "--load-in-4bit", "--load-in-8bit", "--vram", "8"], "exclude each other"),
    (["mineru-fit", "serve", "--engine", "sglang", "--mem-fraction-static", "1.2", "--vram", "8"],
     "--mem-fraction-static: 1.2 is outside (0, 1]"),
    (["mineru-fit", "serve", "--engine", "vllm", "--tp-size", "4", "--vram", "8", "--gpus", "2"],
     "needs 4 GPUs but --gpus gives 2 — use --gpus 4"),
    (["mineru-fit", "serve", "--engine", "vllm", "--vram", "8"], "vllm is not installed — pip install 'mineru-fit[vllm]'"),
    (["mineru-sglang-server", "--vram", "8"], "sglang is not installed — pip install 'mineru-fit[sglang]'"),
    (["mineru-fit", "serve", "--engine", "sglang", "--vram", "8", "--max-batch-size", "4", "--dry-run"],
     "the built-in engine's flags"),
])
def test_bad_input_is_one_line_exit_2_before_anything_starts(argv: list[str], message: str, tmp_path: Path):
    result = run(str(BIN / argv[0]), *argv[1:], MINERU_FIT_STATE_DIR=str(tmp_path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_start_script_serves_the_auto_profile():
    result = run(str(SCRIPT), "sglang", "--dry-run", "--vram", "8")
    assert result.returncode == 0, result.stderr
    assert "-m sglang.launch_server" in " ".join(command_line(result.stdout))
    assert "level none: least aggressive level that fits" in result.stdout


@pytest.mark.parametrize("target, port", [("api", 8000), ("gradio", 7860)])
def test_start_script_starts_the_api_and_the_ui(target: str, port: int):
    result = run(str(SCRIPT), target, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"# service: http://127.0.0.1:{port} " in result.stdout
    assert "# engine: none — no MinerU2.5 model here" in result.stdout and "flash tier" in result.stdout


def test_serve_dry_run_imports_no_torch():
    code = ("import sys, runpy; sys.argv = ['mineru-fit', 'serve', '--engine', 'vllm', '--vram', '8', '--dry-run']\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('HEAVY:' + ','.join(m for m in ('torch', 'transformers', 'vllm', 'sglang') if m in sys.modules))"
            % str(BIN / "mineru-fit"))
    result = run(sys.executable, "-c", code)
    assert result.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_builtin_serve_runs_the_builtin_server_in_process_with_the_plans_options(monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    import mineru_fit.cli.commands  # noqa: F401  (registers serve)
    from mineru_fit.cli.app import app
    from mineru_fit.engines import builtin

    for key in list(os.environ):
        if key.startswith(("MINERU_", "CUDA_", "PYTORCH_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MINERU_FIT_CONFIG", "/nonexistent/config.toml")
    started = []
    monkeypatch.setattr(builtin, "run_server", started.append)
    result = CliRunner().invoke(app, ["serve", "--engine", "builtin", "--vram", "8", "--port", "31999"])
    assert result.exit_code == 0, result.output
    (options,) = started
    plan = plan_json("--engine", "builtin", "--vram", "8")
    assert (options.port, options.level, options.max_batch_size) == (31999, plan["level"], plan["batch_size"])
    assert options.mem_fraction_static == plan["memory_fraction"] and options.max_model_len == plan["max_model_len"]
