"""The doctor's rules, and the command as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mineru_fit.devices import read_inventory
from mineru_fit.doctor import env_findings, gpu_findings, package_findings

NVML = Path(__file__).parent / "data" / "nvml"
MINERU_FIT = Path(sys.executable).parent / "mineru-fit"


def topics(findings, severity: str) -> set[str]:
    return {f.topic for f in findings if f.severity == severity}


def test_launch_blocking_is_flagged_and_not_when_unset() -> None:
    assert "CUDA_LAUNCH_BLOCKING" in topics(env_findings({"CUDA_LAUNCH_BLOCKING": "1"}), "warn")
    assert "CUDA_LAUNCH_BLOCKING" not in topics(env_findings({"CUDA_LAUNCH_BLOCKING": "0"}), "warn")
    assert "CUDA_LAUNCH_BLOCKING" not in topics(env_findings({}), "warn")


def test_the_guides_max_split_is_explained_beside_our_default_and_not_flagged() -> None:
    guide = env_findings({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"})
    assert not [f for f in guide if f.severity in ("warn", "error")]
    [info] = [f for f in guide if f.topic == "PYTORCH_CUDA_ALLOC_CONF"]
    assert "max_split_size_mb:128 is yours and every engine gets it as given" in info.message
    assert "blocks above 128 MB whole" in info.message and "expandable_segments:True" in info.message
    good = env_findings({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})
    assert not [f for f in good if f.severity in ("warn", "error")]


def test_torchvision_beside_cpu_torch_is_an_error() -> None:
    assert "torchvision" in topics(package_findings({"torch": "2.13.0+cpu", "torchvision": "0.29.1"}), "error")
    assert not topics(package_findings({"torch": "2.13.0+cpu", "torchvision": None}), "error")


def test_busy_gpu_and_oversized_virtual_vram_are_reported() -> None:
    inventory = read_inventory(simulate=NVML / "container_no_processes.json")
    findings = gpu_findings(inventory, virtual_vram_gib=200)
    assert "MINERU_VIRTUAL_VRAM_SIZE" in topics(findings, "warn")
    assert not topics(gpu_findings(inventory, virtual_vram_gib=4), "warn")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU_", "CUDA_", "PYTORCH_"))}
    environ.update(COLUMNS="200", NO_COLOR="1", **env)
    return subprocess.run([str(MINERU_FIT), "doctor", *args], capture_output=True, text=True, env=environ, timeout=180)


def test_doctor_reports_gpu_packages_and_warnings() -> None:
    result = run("--simulate", str(NVML / "h100_80gb_1gpu.json"), CUDA_LAUNCH_BLOCKING="1")
    assert result.returncode == 0, result.stderr
    assert "NVIDIA H100 80GB HBM3" in result.stdout and "550.54.15" in result.stdout
    assert "transformers" in result.stdout and "CUDA_LAUNCH_BLOCKING" in result.stdout


def test_doctor_json_and_a_bad_setting_exits_1_without_traceback() -> None:
    result = run("--json", MINERU_DEVICE_MODE="gpu")
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert any(f["severity"] == "error" and "MINERU_DEVICE_MODE" in f["message"] for f in body["findings"])
    assert "Traceback" not in result.stderr
