"""`mineru-fit devices` as a user runs it: the real console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NVML_DATA = Path(__file__).parent / "data" / "nvml"
MINERU_FIT = Path(sys.executable).parent / "mineru-fit"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "MINERU_DEVICE_MODE")}
    environ.update(COLUMNS="160", NO_COLOR="1", **env)
    return subprocess.run(
        [str(MINERU_FIT), "devices", *args], capture_output=True, text=True, env=environ, timeout=60
    )


def test_table_shows_memory_in_gib_and_the_process() -> None:
    result = run("--simulate", str(NVML_DATA / "h100_80gb_1gpu.json"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "NVIDIA H100 80GB HBM3" in out
    # used 5254 MiB, reserved 543 MiB, free and total, each in GiB with one decimal
    for cell in ("5.1 GiB", "0.5 GiB", "74.0 GiB", "79.6 GiB", "9.0", "23 %", "36 °C", "118 / 700 W"):
        assert cell in out, cell
    assert "48213" in out and "python3" in out
    assert "driver 550.54.15" in out and "CUDA 12.4" in out and "NVML memory v2" in out


def test_old_driver_says_v1_used_includes_the_reserve() -> None:
    result = run("--simulate", str(NVML_DATA / "old_driver_no_v2.json"))
    assert result.returncode == 0, result.stderr
    assert "Tesla T4" in result.stdout and "7.5" in result.stdout
    assert "used includes the driver reserve" in result.stdout


def test_container_without_processes_says_so() -> None:
    result = run("--simulate", str(NVML_DATA / "container_no_processes.json"))
    assert result.returncode == 0, result.stderr
    assert "no GPU processes visible" in result.stdout
    assert "warning:" in result.stdout and "9.6 GiB in use" in result.stdout


def test_json_is_one_documented_object() -> None:
    result = run("--json", "--simulate", str(NVML_DATA / "four_gpu_l4.json"))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["schema"] == "mineru-fit/devices" and body["version"] == 1
    assert body["backend"] == "fake" and body["nvml_memory_v2"] is True
    assert [g["name"] for g in body["gpus"]] == ["NVIDIA L4"] * 4
    assert body["gpus"][1]["memory"]["used_bytes"] == 17920 * 1024**2
    assert body["gpus"][1]["processes"][0]["pid"] == 3101
    assert body["gpus"][0]["compute_capability"] == [8, 9]
    assert body["simulated_from"].endswith("four_gpu_l4.json")


def test_gpu_flag_and_cuda_visible_devices() -> None:
    result = run("--json", "--gpu", "1", "--simulate", str(NVML_DATA / "four_gpu_l4.json"), CUDA_VISIBLE_DEVICES="3,2")
    assert result.returncode == 0, result.stderr
    (gpu,) = json.loads(result.stdout)["gpus"]
    assert (gpu["index"], gpu["nvml_index"]) == (1, 2)


def test_device_mode_from_the_environment() -> None:
    result = run("--simulate", str(NVML_DATA / "four_gpu_l4.json"), MINERU_DEVICE_MODE="cpu")
    assert result.returncode == 0
    assert "no CUDA GPU found: MINERU_DEVICE_MODE=cpu" in result.stdout


def test_gpu_that_does_not_exist_is_one_line_and_exit_2() -> None:
    result = run("--gpu", "9", "--simulate", str(NVML_DATA / "four_gpu_l4.json"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "cuda:9" in result.stderr and "4 CUDA GPUs" in result.stderr


@pytest.mark.parametrize("content", ["{not json", '{"format": "mineru-fit/nvml-snapshot", "version": 1, "gpu": []}'])
def test_malformed_snapshot_is_one_line_and_exit_2(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = run("--simulate", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0]


def test_this_machine_without_a_gpu_exits_0() -> None:
    result = run()
    if "no CUDA GPU found" not in result.stdout:
        pytest.skip("this machine has a GPU")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "NVML" in result.stdout


def test_nvml_missing_snapshot_exits_0() -> None:
    result = run("--simulate", str(NVML_DATA / "nvml_missing.json"))
    assert result.returncode == 0
    assert "no CUDA GPU found: NVML library not found" in result.stdout


def test_record_then_simulate(tmp_path: Path) -> None:
    recorded = tmp_path / "machine.json"
    # Recording ignores the filter: the whole machine goes into the file.
    result = run("--record", str(recorded), "--simulate", str(NVML_DATA / "four_gpu_l4.json"), "--gpu", "0")
    assert result.returncode == 0, result.stderr
    assert "recorded 4 GPU(s)" in result.stderr
    replay = run("--json", "--simulate", str(recorded))
    assert len(json.loads(replay.stdout)["gpus"]) == 4
