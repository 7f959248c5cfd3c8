"""MINERU_DEVICE_MODE and CUDA_VISIBLE_DEVICES decide which GPUs a process may plan for."""

from __future__ import annotations

from pathlib import Path

import pytest

from mineru_fit.devices import read_gpu, read_inventory
from mineru_fit.devices.visible import parse_device_mode
from mineru_fit.errors import UsageError
from mineru_fit.units import MIB

NVML_DATA = Path(__file__).parent / "data" / "nvml"
L4 = NVML_DATA / "four_gpu_l4.json"
L4_UUIDS = [
    "GPU-0b7e3d52-91a4-4c6f-8e2d-5a1f9c3b7e04",
    "GPU-5c8d1f2a-3e6b-47d9-b0a1-9e4c2d7f6b13",
    "GPU-a3f6e9b1-7c2d-4815-9d3e-1b6a8c5f2e27",
    "GPU-e9d4b7c3-2a1f-4b6e-8c5d-7f3a0b9e1d38",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "MINERU_DEVICE_MODE"):
        monkeypatch.delenv(name, raising=False)


def test_cpu_mode_gives_no_gpu_with_the_reason() -> None:
    inv = read_inventory("cpu", simulate=L4)
    assert inv.gpus == () and inv.reason == "MINERU_DEVICE_MODE=cpu"


def test_cuda_n_keeps_only_that_gpu() -> None:
    inv = read_inventory("cuda:1", simulate=L4)
    (gpu,) = inv.gpus
    assert gpu.index == 1 and gpu.uuid == L4_UUIDS[1]
    assert gpu.memory.used_bytes == 17920 * MIB


def test_cuda_n_out_of_range_says_how_many_gpus_there_are() -> None:
    with pytest.raises(UsageError) as info:
        read_inventory("cuda:4", simulate=L4)
    message = str(info.value)
    assert "cuda:4" in message and "4 CUDA GPUs" in message and "cuda:3" in message
    assert "\n" not in message


def test_cuda_n_without_any_gpu_is_no_gpu_not_an_error() -> None:
    inv = read_inventory("cuda:0", simulate=NVML_DATA / "nvml_missing.json")
    assert not inv.has_gpu and "NVML library not found" in inv.reason


def test_plain_cuda_keeps_every_gpu() -> None:
    assert len(read_inventory("cuda", simulate=L4).gpus) == 4


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "cuda:-1", "rocm"])
def test_invalid_device_mode_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match="accepted values: cuda, cuda:N, cpu, mps"):
        read_inventory(value, simulate=L4)


def test_device_mode_parsing_is_case_and_space_tolerant() -> None:
    assert str(parse_device_mode(" CUDA:2 ")) == "cuda:2"
    assert parse_device_mode("").kind == "any"


def test_visible_indices_reorder_and_renumber(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    inv = read_inventory(simulate=L4)
    assert [(g.index, g.nvml_index) for g in inv.gpus] == [(0, 3), (1, 1)]
    assert [g.uuid for g in inv.gpus] == [L4_UUIDS[3], L4_UUIDS[1]]


def test_cuda_n_counts_within_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in torch: cuda:0 is the first *visible* GPU.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    (gpu,) = read_inventory("cuda:1", simulate=L4).gpus
    assert (gpu.index, gpu.nvml_index) == (1, 3)
    with pytest.raises(UsageError, match="2 CUDA GPUs with CUDA_VISIBLE_DEVICES='2,3'"):
        read_inventory("cuda:2", simulate=L4)


def test_visible_uuids_and_uuid_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{L4_UUIDS[2]},GPU-0b7e")
    inv = read_inventory(simulate=L4)
    assert [g.nvml_index for g in inv.gpus] == [2, 0]


def test_an_unmatched_entry_ends_the_list_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,7,2")
    inv = read_inventory(simulate=L4)
    assert [g.nvml_index for g in inv.gpus] == [1]
    assert any("'7' matches no GPU" in w and "'2'" in w for w in inv.warnings)


@pytest.mark.parametrize("value", ["", "-1", "NoDevFiles"])
def test_hiding_every_gpu_gives_a_reason(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    inv = read_inventory(simulate=L4)
    assert not inv.has_gpu
    assert "hides every GPU" in inv.reason and "NVML sees 4" in inv.reason


def test_a_repeated_gpu_hides_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"0,{L4_UUIDS[0]}")
    inv = read_inventory(simulate=L4)
    assert not inv.has_gpu and any("twice" in w for w in inv.warnings)


def test_mig_uuid_selects_the_instance_with_its_own_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-2b6f9e1d-7c3a-5e84-9b2d-4f8a1c6e3d57")
    (gpu,) = read_inventory(simulate=NVML_DATA / "a100_40gb_mig.json").gpus
    assert gpu.is_mig and gpu.name.endswith("MIG 3g.20gb")
    assert gpu.memory.total_bytes == 19968 * MIB
    assert gpu.compute_capability == (8, 0)
    assert [p.pid for p in gpu.processes] == [7719]


def test_whole_gpu_with_mig_enabled_warns() -> None:
    inv = read_inventory(simulate=NVML_DATA / "a100_40gb_mig.json")
    assert len(inv.gpus) == 1 and len(inv.gpus[0].mig_devices) == 2
    assert any("MIG enabled" in w and "MIG-2b6f9e1d" in w for w in inv.warnings)
    assert not any("no process" in w for w in inv.warnings)  # MIG processes live on the instances


def test_mixed_gpus_without_pci_order_warn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = L4.read_text().replace('"name": "NVIDIA L4"', '"name": "NVIDIA L40S"', 1)
    mixed = tmp_path / "mixed.json"
    mixed.write_text(text)
    assert any("CUDA_DEVICE_ORDER" in w for w in read_inventory(simulate=mixed).warnings)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert not any("CUDA_DEVICE_ORDER" in w for w in read_inventory(simulate=mixed).warnings)


def test_read_gpu() -> None:
    assert read_gpu(2, simulate=L4).uuid == L4_UUIDS[2]
    assert read_gpu(0, simulate=NVML_DATA / "nvml_missing.json") is None
