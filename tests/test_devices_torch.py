"""The torch fallback: used only when NVML is out, and torch is never imported otherwise."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from mineru_fit.devices import read_inventory
from mineru_fit.devices.torch_backend import read_torch_inventory, torch_installed
from mineru_fit.units import GIB


@dataclass
class _Props:
    name: str
    total_memory: int
    major: int
    minor: int
    uuid: str


class FakeTorchCuda:
    """The few torch.cuda calls the fallback makes, for a machine with two RTX 3060s."""

    def __init__(self, free_bytes: list[int]) -> None:
        self._free = free_bytes

    def is_available(self) -> bool:
        return bool(self._free)

    def device_count(self) -> int:
        return len(self._free)

    def get_device_properties(self, index: int) -> _Props:
        return _Props("NVIDIA GeForce RTX 3060", 12 * GIB, 8, 6, f"9a2d6c4f-1e8b-4f35-a7d2-6b3e9c1f5a8{index}")

    def mem_get_info(self, index: int) -> tuple[int, int]:
        return self._free[index], 12 * GIB


class FakeTorchMps:
    def recommended_max_memory(self) -> int:
        return 22 * GIB

    def driver_allocated_memory(self) -> int:
        return 3 * GIB


def _fake_torch(free_bytes: list[int], mps: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        __version__="2.13.0",
        cuda=FakeTorchCuda(free_bytes),
        mps=FakeTorchMps(),
        backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps)),
    )


def test_torch_cuda_reports_memory_from_mem_get_info() -> None:
    inv = read_torch_inventory("cuda", torch=_fake_torch([10 * GIB, 4 * GIB]))
    assert inv.backend == "torch"
    assert [g.memory.free_bytes for g in inv.gpus] == [10 * GIB, 4 * GIB]
    assert inv.gpus[1].memory.used_bytes == 8 * GIB
    assert inv.gpus[0].compute_capability == (8, 6)
    assert inv.gpus[0].uuid.startswith("GPU-9a2d6c4f")  # same form as NVML and CUDA_VISIBLE_DEVICES
    assert any("NVML is unavailable" in w for w in inv.warnings)


def test_torch_without_cuda_gives_a_reason() -> None:
    inv = read_torch_inventory("cuda", torch=_fake_torch([]))
    assert not inv.has_gpu and inv.reason == "torch 2.13.0 sees no CUDA device"


def test_mps_uses_the_recommended_working_set() -> None:
    inv = read_torch_inventory("mps", torch=_fake_torch([], mps=True))
    (gpu,) = inv.gpus
    assert inv.backend == "mps"
    assert (gpu.memory.total_bytes, gpu.memory.used_bytes, gpu.memory.free_bytes) == (22 * GIB, 3 * GIB, 19 * GIB)


def test_no_mps_on_this_machine() -> None:
    assert "no MPS device" in read_torch_inventory("mps", torch=_fake_torch([])).reason


def _modules_after(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_importing_devices_does_not_import_torch() -> None:
    assert _modules_after("import mineru_fit.devices") == "False"


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the default mode asks torch for MPS")
def test_default_read_without_nvml_does_not_import_torch() -> None:
    # `mineru-fit plan` reads the inventory on every run and must stay well under a second.
    code = "from mineru_fit.devices import read_inventory; inv = read_inventory(); print(inv.backend)"
    out = _modules_after(code).splitlines()
    if out[0] == "none":
        assert out[-1] == "False"


@pytest.mark.skipif(not torch_installed(), reason="torch is not installed")
def test_explicit_cuda_mode_asks_torch_when_nvml_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    inv = read_inventory("cuda")
    if inv.backend != "none":
        pytest.skip("this machine has a CUDA GPU")
    assert "torch" in inv.reason and "sees no CUDA device" in inv.reason
