"""`mineru-fit plan` as a user runs it: the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NVML = Path(__file__).parent / "data" / "nvml"
MINERU_FIT = Path(sys.executable).parent / "mineru-fit"
LEVELS = ["none", "basic", "aggressive", "extreme", "flash"]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU_", "CUDA_", "PYTORCH_"))}
    environ.update(COLUMNS="200", NO_COLOR="1", **env)
    return subprocess.run([str(MINERU_FIT), "plan", *args], capture_output=True, text=True, env=environ, timeout=60)


def test_table_shows_every_term_per_level_the_pick_and_the_command() -> None:
    result = run("--vram", "8", "--engine", "builtin")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for word in ("weights", "kv cache", "activations", "cuda graphs", "runtime", "margin", "predicted peak", *LEVELS):
        assert word in out, word
    # One request is prefilled at a time: level none (8 rows, full context) fits an 8 GiB card.
    assert "auto picks: none" in out and "8.0 GiB" in out
    assert "mineru-fit serve --engine builtin" in out and "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in out


def test_json_report_round_trips_and_the_chosen_plan_fits() -> None:
    from mineru_fit.planner import PlanReport

    result = run("--vram", "12", "--engine", "vllm", "--json")
    assert result.returncode == 0, result.stderr
    report = PlanReport.model_validate_json(result.stdout)
    assert [p.level for p in report.levels] == LEVELS
    assert report.plan.fits and report.plan.level == report.chosen_level
    assert report.plan.predicted_peak_bytes <= 12 * 1024**3
    assert report.plan.argv[:2] == ["vllm", "serve"]


def test_a_co_tenant_on_the_gpu_shrinks_the_budget() -> None:
    # The recorded H100 has a python process holding ~5 GiB: the budget is what is free.
    body = json.loads(run("--simulate", str(NVML / "h100_80gb_1gpu.json"), "--engine", "sglang", "--json").stdout)
    plan = body["plan"]
    assert plan["device"]["name"] == "NVIDIA H100 80GB HBM3"
    assert plan["budget_bytes"] == plan["device"]["free_bytes"] < plan["device"]["total_bytes"] - 5 * 1024**3
    assert "held by the driver and other processes" in plan["device"]["budget_reason"]


def test_virtual_vram_caps_the_budget_on_a_real_gpu() -> None:
    body = json.loads(run("--simulate", str(NVML / "h100_80gb_1gpu.json"), "--json", "--engine", "builtin",
                          MINERU_VIRTUAL_VRAM_SIZE="6").stdout)
    assert body["plan"]["budget_bytes"] == 6 * 1024**3
    assert body["chosen_level"] in ("basic", "aggressive")
    assert "MINERU_VIRTUAL_VRAM_SIZE=6" in body["plan"]["device"]["budget_reason"]


def test_old_gpu_plans_float16() -> None:
    body = json.loads(run("--simulate", str(NVML / "old_driver_no_v2.json"), "--json", "--engine", "builtin").stdout)
    assert body["plan"]["dtype"] == "float16"
    assert body["plan"]["device"]["compute_capability"] == [7, 5]


def test_no_gpu_plans_the_builtin_engine_on_the_cpu() -> None:
    result = run("--json", "--simulate", str(NVML / "nvml_missing.json"))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["engine"] == "builtin" and body["plan"]["device"]["device"] == "cpu"


def test_profiles_show_the_guide_beside_the_planner() -> None:
    result = run("--profiles")
    assert result.returncode == 0, result.stderr
    for card in ("8 GiB", "12 GiB", "16 GiB", "24 GiB"):
        assert card in result.stdout
    assert "0.4 · 4-bit · 1024" in result.stdout and "0.8 · 16-bit · 8192" in result.stdout
    rows = json.loads(run("--profiles", "--json").stdout)
    assert [r["vram_gib"] for r in rows] == [8, 12, 16, 24]
    assert all(r["guide"]["predicted_peak_bytes"] > 0 and r["auto"]["fits"] for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vram", "0"], "--vram 0 is not a memory size"),
        (["--vram", "-4"], "is not a memory size"),
        (["--vram", "8", "--load-in-4bit", "--load-in-8bit"], "exclude each other"),
        (["--vram", "8", "--mem-fraction-static", "1.5"], "outside (0, 1]"),
        (["--vram", "8", "--gpus", "1", "--engine", "sglang", "--tp-size", "2"], "needs 2 GPUs but --gpus gives 1"),
        (["--vram", "8", "--max-model-len", "300"], "shorter than one MinerU request"),
        (["--engine", "sglang", "--simulate", str(NVML / "nvml_missing.json")], "needs a CUDA GPU"),
        (["--engine", "tensorrt"], "tensorrt"),
        (["--level", "ludicrous"], "ludicrous"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_model_that_is_nowhere_is_a_clear_runtime_error() -> None:
    result = run("--vram", "8", "--model", "/nonexistent/model/dir")
    assert result.returncode == 1
    assert "neither a model folder nor a downloaded model" in result.stderr and "Traceback" not in result.stderr


def test_malformed_config_json_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["Qwen2VLForConditionalGeneration"], ')
    result = run("--vram", "8", "--model", str(tmp_path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "config.json" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # rich may wrap the one line


def test_corrupt_safetensors_header_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[1] / "src/mineru_fit/models/data/MinerU2.5-2509-1.2B"
    (tmp_path / "config.json").write_text((shipped / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{not json")
    result = run("--vram", "8", "--model", str(tmp_path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "model.safetensors" in result.stderr and "Traceback" not in result.stderr


def test_bad_environment_variable_is_named() -> None:
    result = run("--vram", "8", MINERU_DEVICE_MODE="gpu")
    assert result.returncode == 2
    assert "MINERU_DEVICE_MODE='gpu'" in result.stderr and "cuda, cuda:N, cpu, mps" in result.stderr


def test_gpu_flag_and_multi_gpu_budget_use_the_right_card() -> None:
    four = str(NVML / "four_gpu_l4.json")
    one = json.loads(run("--simulate", four, "--gpu", "0", "--json").stdout)["plan"]
    # GPU 1 of the recorded box is busy: tp 2 over GPUs 0–1 is bounded by its free memory.
    tp = json.loads(run("--simulate", four, "--engine", "vllm", "--tp-size", "2", "--json").stdout)["plan"]
    assert tp["budget_bytes"] < one["budget_bytes"]
    assert "the tightest of GPUs 0–1" in tp["device"]["budget_reason"]
    assert tp["argv"][tp["argv"].index("--tensor-parallel-size") + 1] == "2"
    missing = run("--simulate", four, "--gpu", "9")
    assert missing.returncode == 2 and "4 CUDA GPUs" in missing.stderr
