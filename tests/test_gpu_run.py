"""`make gpu GPU_DRY=1`: every step of the GPU run at tiny size on the CPU, with only the packages
the GPU machine will have importable, writing into its out folder only. Then the GPU-only
arithmetic (errors, floor, calibration, the README table) on the dry record with GPU-like numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

WRITTEN_IN_THE_CHECKOUT = ("README.md", "src/mineru_fit/planner/data/calibration.json")


@pytest.fixture(scope="module")
def dry(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path, dict]:
    out = tmp_path_factory.mktemp("gpu-out")
    before = {p: (ROOT / p).read_bytes() for p in WRITTEN_IN_THE_CHECKOUT}
    listing = sorted(p.name for p in (ROOT / "docs" / "measurements").iterdir())
    done = subprocess.run(
        ["make", "-s", "gpu", "GPU_DRY=1", f"GPU_OUT={out}", f"GPU_PYTHON={sys.executable}", "GPU_DEPS="],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    # A dry run never touches the checkout: it writes a copy of those folders under its out folder.
    assert {p: (ROOT / p).read_bytes() for p in WRITTEN_IN_THE_CHECKOUT} == before
    assert sorted(p.name for p in (ROOT / "docs" / "measurements").iterdir()) == listing
    [record_path] = out.glob("cpu-dry-run-*.json")
    return done, out, json.loads(record_path.read_text())


def test_every_step_runs_and_the_short_table_is_printed_last(dry: tuple) -> None:
    done, out, record = dry
    assert [s["step"] for s in record["steps"]] == ["preflight", "build_model", "memory_table", "serve",
                                                    "engine_vs_mineru"]
    assert all(s["status"] == "ok" and s["estimate_s"] > 0 for s in record["steps"])
    tail = done.stdout.strip().splitlines()[-12:]
    assert any(line.startswith("== make gpu on CPU dry run") and "pass" in line for line in tail)
    assert any(line.startswith("extreme ") for line in tail)  # the memory table row
    assert any(line.startswith("throughput (level basic): c=1") for line in tail)
    assert any(line.startswith("checks: ") and " 0 fail" in line for line in tail)
    assert any(line.startswith("engine vs MinerU transformers (float32, tokens/s): c=1 ") for line in tail)
    assert tail[-1].startswith(f"files in {out}")
    # The run hid the packages the GPU machine will not have, and still ran.
    assert "packages hidden that the GPU machine will not have" in done.stdout
    assert (out / "gpu-run.log").read_text() == done.stdout


def test_the_record_names_the_machine_command_and_every_check(dry: tuple) -> None:
    _, _, record = dry
    assert record["benchmark"] == "make_gpu" and record["command"] == "make gpu GPU_DRY=1"
    assert record["machine"]["gpu"] == "CPU dry run (no GPU)" and record["machine"]["torch"]
    assert "dry_run" in record  # says plainly that its figures are a rehearsal
    names = [c["check"] for c in record["checks"]]
    for expected in ("extreme: planner error within 5%", "extreme: under-prediction at most 3%",
                     "extreme: peak at most 1.15× its floor", "monitor peak within 2% of NVML's per-process figure",
                     "oom: every request answered", "oom: a batch split under the cap", "oom: a 503 under the cap"):
        assert expected in names
    by_name = {c["check"]: c for c in record["checks"]}
    assert by_name["extreme: planner error within 5%"]["status"] == "n/a"  # no GPU memory on the CPU
    assert by_name["oom: every request answered"]["status"] == "pass"
    text = json.dumps(record)
    assert str(ROOT) not in text and "/tmp/" not in text  # no paths of this machine in a committed file


def test_the_level_ran_in_its_own_process_under_monitor_watch(dry: tuple) -> None:
    _, _, record = dry
    [level] = record["levels"]
    assert level["level"] == "extreme" and level["plan"]["weight_format"] == "nf4"
    m = level["measured"]
    assert m["pages_per_s"] > 0 and m["oom"] is None and m["nvml_reason"]  # no GPU: a reason, not a number
    assert abs(level["predicted_weights_bytes"] - m["weights_bytes"]) / m["weights_bytes"] < 0.05
    assert level["floor"]["kv_one_request_bytes"] > 0
    watch, once = level["monitor"]["watch"], level["monitor"]["once"]
    assert watch["exit_code"] == 0 and watch["command"][2:4] == ["--worker", "extreme"]
    # The worker's own lines ended the watch's phases, as an engine's ready line would.
    assert watch["phases"]["load"]["ended_by"] == "ready_pattern"
    assert watch["phases"]["first_request"]["ended_by"] == "phase_marker"
    assert once["exit_code"] == 0 and once["worker_pid"] == level["pid"]
    assert record["monitor"]["level"] == "extreme"


def test_the_engine_server_answered_every_request(dry: tuple) -> None:
    _, out, record = dry
    serve = record["serve"]
    assert serve["throughput_server"]["command"][:4] == ["mineru-fit", "serve", "--engine", "builtin"]
    assert [r["concurrency"] for r in serve["throughput"]] == [1, 2, 4]
    for row in serve["throughput"]:
        assert row["statuses"] == {"200": row["requests"]} and row["tokens_per_s"] > 0
    oom = serve["oom"]
    assert oom["burst"]["answered"] == oom["burst"]["requests"] == 16
    assert oom["recovery"]["statuses"] == {"200": 8} and oom["healthy_after"] is True
    assert "serving" in (out / "serve-throughput.log").read_text()


def test_the_engine_ran_against_minerus_own_backend_with_the_carried_packages_only(dry: tuple) -> None:
    _, _, record = dry
    engine = record["engine_vs_mineru"]
    # Concurrency 8 first (the must-hold), both sides the same tokens, on the model the run built.
    runs = engine["runs"]
    assert [(r["side"], r["concurrency"]) for r in runs[:2]] == [("builtin", 8), ("mineru_transformers", 8)]
    assert {r["concurrency"] for r in runs} == {1, 8} and not engine["skipped"]
    assert all(r["tokens"] == engine["workload"]["tokens_per_run"] for r in runs)
    assert engine["model_dir"] == "$WORK/model" and "$WORK/model" in engine["command"]
    by_name = {c["check"]: c for c in record["checks"]}
    c8 = by_name["engine: concurrency 8 at least 1.5× MinerU's transformers backend"]
    c1 = by_name["engine: concurrency 1 at least 0.95× it at every level's context"]
    # A tiny model on the CPU says nothing about speed: figures in the detail, judged n/a.
    assert c8["status"] == c1["status"] == "n/a" and "tokens/s" in c8["detail"] and "dry run" in c1["detail"]


def test_the_files_it_would_write_are_written_and_can_be_landed(dry: tuple, tmp_path: Path) -> None:
    from gpu_land import land
    from memory_table import END, START

    _, out, record = dry
    mapping = json.loads((out / "files.json").read_text())
    assert sorted(mapping.values()) == sorted([
        f"docs/measurements/{next(out.glob('cpu-dry-run-*.json')).name}",
        "docs/measurements/memory-by-level.png", "src/mineru_fit/planner/data/calibration.json"])
    assert (out / "memory-by-level.png").read_bytes()[:4] == b"\x89PNG"
    calibration = json.loads((out / "calibration.json").read_text())
    assert [e["gpu_class"] for e in calibration["gpu_classes"]] == ["CPU dry run (no GPU)"]
    # A checkout to land into: the README's markers and the planner's calibration file.
    checkout = tmp_path / "checkout"
    (checkout / "docs" / "measurements").mkdir(parents=True)
    (checkout / "src/mineru_fit/planner/data").mkdir(parents=True)
    shutil.copyfile(ROOT / "README.md", checkout / "README.md")
    shutil.copyfile(ROOT / "src/mineru_fit/planner/data/calibration.json",
                    checkout / "src/mineru_fit/planner/data/calibration.json")
    written = land(out, checkout)
    assert {p.relative_to(checkout).as_posix() for p in written} == set(mapping.values()) | {"README.md"}
    section = (checkout / "README.md").read_text().split(START)[1].split(END)[0]
    assert "CPU dry run (no GPU)" in section and "| extreme |" in section and "requests/s" in section
    (out / "files.json").write_text(json.dumps({"evil.json": "../../etc/evil.json"}))
    try:
        with pytest.raises(SystemExit, match="not a place"):
            land(out, checkout)
    finally:
        (out / "files.json").write_text(json.dumps(mapping))


def _as_if_on_a_gpu(record: dict, over: float) -> dict:
    """The dry record with NVML-like peaks `over` × the prediction: the GPU-only arithmetic, exercised."""
    from gpu_memory import summarize

    fake = json.loads(json.dumps(record))
    fake["machine"].update(gpu="Rehearsal GPU (synthetic numbers)", driver="0")
    for result in fake["levels"]:
        result["measured"]["nvml_peak_bytes"] = int(result["predicted_peak_bytes"] * over)
        result["measured"]["cuda_context_bytes"] = 500 * 2**20
    fake["summary"] = summarize(fake["levels"])
    return fake


def test_gpu_numbers_give_errors_floor_checks_and_a_readme_table(dry: tuple, tmp_path: Path) -> None:
    from gpu_checks import memory_checks
    from memory_table import END, START, latest_measurements, render_chart, render_section, update_readme

    _, _, record = dry
    rows = {r["level"]: r for r in _as_if_on_a_gpu(record, 1.02)["summary"]}
    assert rows["extreme"]["error_pct"] == pytest.approx(-1.96, abs=0.05) and rows["extreme"]["under_predicted"]
    status = {c["check"]: c["status"] for c in memory_checks(_as_if_on_a_gpu(record, 1.02)["summary"])}
    assert status["extreme: planner error within 5%"] == "pass"
    status = {c["check"]: c["status"] for c in memory_checks(_as_if_on_a_gpu(record, 1.04)["summary"])}
    assert status["extreme: planner error within 5%"] == "pass" and status["extreme: under-prediction at most 3%"] == "fail"

    folder = tmp_path / "measurements"
    folder.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\nold\n{END}\ntail\n")
    assert "No GPU measurement has landed yet" in render_section(latest_measurements(folder))
    cpu_only = json.loads(json.dumps(record))
    cpu_only["machine"]["gpu"] = None
    (folder / "cpu-run.json").write_text(json.dumps(cpu_only))  # a record without a GPU is not a measurement
    assert latest_measurements(folder) == []
    (folder / "rehearsal.json").write_text(json.dumps(_as_if_on_a_gpu(record, 1.02)))
    section = render_section(latest_measurements(folder))
    assert "Rehearsal GPU" in section and "| extreme |" in section and "20–30%" in section
    assert "physical floor" in section and "rehearsal.json" in section
    assert update_readme(readme, section) and not update_readme(readme, section)
    assert readme.read_text().endswith("tail\n")
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
    assert gpu_class("NVIDIA GeForce RTX 4090") == "RTX 4090" and gpu_class("NVIDIA H200") == "H200"
