"""Snapshot files: shipped ones are consistent, recordings replay exactly, bad files say why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mineru_fit.devices import read_inventory, read_machine_inventory
from mineru_fit.devices.snapshot import inventory_to_snapshot, load_snapshot, write_snapshot
from mineru_fit.errors import UsageError

NVML_DATA = Path(__file__).parent / "data" / "nvml"
SNAPSHOTS = sorted(NVML_DATA.glob("*.json"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "MINERU_DEVICE_MODE"):
        monkeypatch.delenv(name, raising=False)


def test_every_snapshot_the_brief_asks_for_is_shipped() -> None:
    names = {p.name for p in SNAPSHOTS}
    assert {
        "h100_80gb_1gpu.json",
        "four_gpu_l4.json",
        "container_no_processes.json",
        "old_driver_no_v2.json",
        "nvml_missing.json",
        "rtx4060_laptop_8gb.json",
        "rtx3060_12gb.json",
        "rtx4060ti_16gb.json",
        "rtx4090_24gb.json",
    } <= names


@pytest.mark.parametrize("path", SNAPSHOTS, ids=lambda p: p.name)
def test_shipped_snapshot_bytes_add_up_exactly(path: Path) -> None:
    snapshot = load_snapshot(path)
    assert snapshot.source
    for gpu in snapshot.gpus:
        for device in [gpu, *gpu.mig_devices]:
            m = device.memory
            assert m.free_bytes + m.used_bytes + m.reserved_bytes == m.total_bytes, device.name
            known = sum(p.used_bytes or 0 for p in device.processes)
            assert known <= m.used_bytes, f"{device.name}: processes hold more than is used"


@pytest.mark.parametrize("path", SNAPSHOTS, ids=lambda p: p.name)
def test_record_then_replay_gives_the_same_inventory(path: Path, tmp_path: Path) -> None:
    machine = read_machine_inventory(simulate=path)
    recorded = tmp_path / "recorded.json"
    write_snapshot(inventory_to_snapshot(machine), recorded)
    assert read_machine_inventory(simulate=recorded) == machine
    assert read_inventory(simulate=recorded) == read_inventory(simulate=path)


def test_recording_keeps_v1_meaning_of_used(tmp_path: Path) -> None:
    machine = read_machine_inventory(simulate=NVML_DATA / "old_driver_no_v2.json")
    snapshot = inventory_to_snapshot(machine)
    assert snapshot["nvml"]["memory_v2"] is False
    write_snapshot(snapshot, tmp_path / "t4.json")
    assert read_machine_inventory(simulate=tmp_path / "t4.json").nvml_memory_v2 is False


def _one_line_error(path: Path) -> str:
    with pytest.raises(UsageError) as info:
        read_inventory(simulate=path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert info.value.exit_code == 2
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _one_line_error(tmp_path / "nope.json")


def test_not_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ this is not json")
    assert "not valid JSON" in _one_line_error(bad)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    doc = json.loads((NVML_DATA / "h100_80gb_1gpu.json").read_text())
    doc["gpus"][0]["fan_pct"] = 30
    bad = tmp_path / "extra.json"
    bad.write_text(json.dumps(doc))
    assert "unknown key 'gpus.0.fan_pct'" in _one_line_error(bad)


def test_memory_that_does_not_add_up_is_an_error(tmp_path: Path) -> None:
    doc = json.loads((NVML_DATA / "rtx4090_24gb.json").read_text())
    doc["gpus"][0]["memory"]["free_bytes"] += 2 * 1024**3
    bad = tmp_path / "sum.json"
    bad.write_text(json.dumps(doc))
    assert "total_bytes" in _one_line_error(bad)


def test_reserved_without_v2_is_an_error(tmp_path: Path) -> None:
    doc = json.loads((NVML_DATA / "rtx4090_24gb.json").read_text())
    doc["nvml"]["memory_v2"] = False
    bad = tmp_path / "v1.json"
    bad.write_text(json.dumps(doc))
    assert "memory_v2 is false" in _one_line_error(bad)


def test_gpus_with_init_error_is_an_error(tmp_path: Path) -> None:
    doc = json.loads((NVML_DATA / "rtx4090_24gb.json").read_text())
    doc["nvml"]["init_error"] = "DriverNotLoaded"
    bad = tmp_path / "init.json"
    bad.write_text(json.dumps(doc))
    assert "init_error" in _one_line_error(bad)


def test_driver_not_loaded_reason(tmp_path: Path) -> None:
    snapshot = tmp_path / "unloaded.json"
    snapshot.write_text(json.dumps({"format": "mineru-fit/nvml-snapshot", "version": 1, "nvml": {"init_error": "DriverNotLoaded"}}))
    assert read_inventory(simulate=snapshot).reason == "NVIDIA driver not loaded"


def test_a_file_that_is_not_a_snapshot_is_rejected(tmp_path: Path) -> None:
    other = tmp_path / "package.json"
    other.write_text(json.dumps({"gpus": []}))
    assert "missing key 'format'" in _one_line_error(other)
