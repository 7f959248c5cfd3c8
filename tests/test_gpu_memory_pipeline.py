"""Issue 8's GPU run, rehearsed on the CPU: the worker, the summary, calibration, the README
table and the chart all run end to end, so one scripted run on a GPU does it all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

from fixtures.tiny_qwen2vl import build_tiny_qwen2vl  # noqa: E402


@pytest.fixture(scope="module")
def cpu_record(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # 64-wide vision layers: bitsandbytes' CPU 4-bit kernel needs whole 64-weight blocks.
    model = build_tiny_qwen2vl(tmp_path_factory.mktemp("bench-model"), vision={"embed_dim": 64})
    out = tmp_path_factory.mktemp("measurements")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_memory.py"), "--device", "cpu", "--model-dir", str(model),
         "--levels", "basic,extreme", "--pages", "2", "--output-tokens", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [path] = list(out.glob("*.json"))
    assert "predicted" in done.stdout and "measured" in done.stdout  # the short table is printed last
    return json.loads(path.read_text())


def test_each_level_runs_in_its_own_process_with_its_plan(cpu_record: dict) -> None:
    levels = {r["level"]: r for r in cpu_record["levels"]}
    assert set(levels) == {"basic", "extreme"}
    for level, result in levels.items():
        assert "error" not in result, result
        assert result["plan"]["level"] == level and result["predicted_peak_bytes"] > 0
        m = result["measured"]
        assert m["load_s"] > 0 and m["pages_per_s"] > 0 and m["oom"] is None
        assert m["nvml_reason"]  # no GPU here: the reason is recorded, not a fake number
        # The weights the worker measured match what the planner predicted for that format.
        assert abs(result["predicted_weights_bytes"] - m["weights_bytes"]) / m["weights_bytes"] < 0.05
    assert levels["extreme"]["plan"]["weight_format"] == "nf4"
    assert levels["extreme"]["floor"]["kv_one_request_bytes"] > 0
    assert cpu_record["command"].startswith("python benchmarks/gpu_memory.py")
    assert cpu_record["machine"]["torch"]


def _with_fake_gpu_numbers(record: dict) -> dict:
    """The CPU record with NVML peaks filled in, to exercise the GPU-only arithmetic."""
    from gpu_memory import summarize

    fake = json.loads(json.dumps(record))
    fake["machine"].update(gpu="Rehearsal GPU (synthetic numbers)", driver="0", torch="0")
    for result in fake["levels"]:
        result["measured"]["nvml_peak_bytes"] = int(result["predicted_peak_bytes"] * 1.02)
        result["measured"]["cuda_context_bytes"] = 500 * 2**20
    fake["summary"] = summarize(fake["levels"])
    return fake


def test_summary_reports_error_under_prediction_and_the_floor(cpu_record: dict) -> None:
    rows = {r["level"]: r for r in _with_fake_gpu_numbers(cpu_record)["summary"]}
    assert rows["basic"]["error_pct"] == pytest.approx(-1.96, abs=0.05)
    assert rows["basic"]["under_predicted"] is True
    assert rows["extreme"]["peak_over_floor"] > 0


def test_readme_table_and_chart_come_from_measurement_files_only(cpu_record: dict, tmp_path: Path) -> None:
    from memory_table import END, START, latest_measurements, render_chart, render_section, update_readme

    folder = tmp_path / "measurements"
    folder.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\nold\n{END}\ntail\n")
    assert "No GPU measurement has landed yet" in render_section(latest_measurements(folder))
    (folder / "cpu-run.json").write_text(json.dumps(cpu_record))  # a CPU record is not a GPU measurement
    assert latest_measurements(folder) == []
    (folder / "rehearsal.json").write_text(json.dumps(_with_fake_gpu_numbers(cpu_record)))
    section = render_section(latest_measurements(folder))
    assert "Rehearsal GPU" in section and "| basic |" in section and "60–80%" in section
    assert "physical floor" in section and "rehearsal.json" in section
    assert update_readme(readme, section) and not update_readme(readme, section)
    assert readme.read_text().endswith("tail\n")
    pytest.importorskip("matplotlib")
    chart = render_chart(latest_measurements(folder), tmp_path / "chart.png")
    assert chart is not None and chart.read_bytes()[:4] == b"\x89PNG"


def test_calibration_is_written_per_gpu_class_and_used_by_the_planner(tmp_path: Path) -> None:
    from gpu_memory import gpu_class, write_calibration

    from mineru_fit.planner.calibration import GpuCalibration, cuda_context_bytes

    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"about": "", "gpu_classes": []}))
    source = ROOT / "docs" / "measurements" / "nvidia-h100-80gb-hbm3-2026-01-01.json"
    write_calibration("NVIDIA H100 80GB HBM3", 530 * 2**20, source, path)
    write_calibration("NVIDIA H100 80GB HBM3", 520 * 2**20, source, path)  # replaces, never duplicates
    entries = json.loads(path.read_text())["gpu_classes"]
    assert [e["gpu_class"] for e in entries] == ["H100"] and entries[0]["source"].startswith("docs/measurements/")
    table = tuple(GpuCalibration(**e) for e in entries)
    assert cuda_context_bytes("NVIDIA H100 PCIe", table) == (520 * 2**20, entries[0]["source"])
    assert cuda_context_bytes("NVIDIA L4", table)[1] is None
    assert gpu_class("NVIDIA GeForce RTX 4090") == "RTX 4090"
