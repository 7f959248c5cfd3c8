"""What hardware there is: NVML first, torch as a fallback, a snapshot replay for tests.

No GPU is a normal answer (an empty Inventory with a reason), never an exception. torch is
imported only by the fallback, and only when NVML is out and it can help.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Union

from mineru_fit.devices.nvml import NvmlSession, read_nvml_inventory
from mineru_fit.devices.types import Gpu, GpuProcess, Inventory, MemoryInfo
from mineru_fit.devices.visible import DeviceMode, parse_device_mode, select_devices

logger = logging.getLogger(__name__)

__all__ = [
    "Gpu",
    "GpuProcess",
    "Inventory",
    "MemoryInfo",
    "parse_device_mode",
    "read_gpu",
    "read_inventory",
    "read_machine_inventory",
]

PathLike = Union[str, Path]


def read_machine_inventory(simulate: Optional[PathLike] = None) -> Inventory:
    """Every GPU NVML sees, unfiltered, in nvidia-smi order (what `devices --record` writes).

    `simulate` replays a snapshot file through FakeNvml instead of the real NVML."""
    if simulate is not None:
        from mineru_fit.devices.fake import FakeNvml  # pydantic-backed: load only when replaying

        with NvmlSession(FakeNvml.from_file(Path(simulate))) as session:
            # Process ids in a snapshot belong to another machine: never look them up in /proc.
            inventory = read_nvml_inventory(session, proc_root=None)
        return replace(inventory, backend="fake") if inventory.backend == "nvml" else inventory
    nvml = _import_pynvml()
    if nvml is None:
        return Inventory(backend="none", reason="nvidia-ml-py is not installed — pip install nvidia-ml-py")
    with NvmlSession(nvml) as session:
        return read_nvml_inventory(session)


def read_inventory(device_mode: Optional[str] = None, simulate: Optional[PathLike] = None) -> Inventory:
    """The GPUs this process may use, given MINERU_DEVICE_MODE's value and CUDA_VISIBLE_DEVICES.

    device_mode: cuda, cuda:N, cpu, mps or None (every visible GPU). UsageError for a bad mode
    or a cuda:N that does not exist; an empty Inventory with a reason when there is no GPU."""
    mode = parse_device_mode(device_mode)
    if mode.kind == "cpu":
        return Inventory(backend="none", reason="MINERU_DEVICE_MODE=cpu")
    if mode.kind == "mps":
        if simulate is not None:
            return Inventory(backend="none", reason="MINERU_DEVICE_MODE=mps, but a snapshot holds only NVIDIA GPUs")
        return _torch_fallback("mps", mode, nvml_reason=None)
    machine = read_machine_inventory(simulate)
    if machine.backend == "none" and simulate is None and _torch_worth_asking(mode):
        return _torch_fallback("mps" if sys.platform == "darwin" and mode.kind == "any" else "cuda", mode, machine.reason)
    return select_devices(
        machine,
        mode,
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        device_order=os.environ.get("CUDA_DEVICE_ORDER"),
    )


def read_gpu(index: int, simulate: Optional[PathLike] = None) -> Optional[Gpu]:
    """CUDA GPU `index`, or None when there is no GPU at all (UsageError if others exist)."""
    inventory = read_inventory(f"cuda:{index}", simulate=simulate)
    return inventory.gpus[0] if inventory.gpus else None


def _torch_worth_asking(mode: DeviceMode) -> bool:
    # Importing torch costs seconds: only when a Mac may have MPS or the user asked for a GPU.
    return sys.platform == "darwin" or mode.kind in ("cuda", "mps")


def _torch_fallback(kind: str, mode: DeviceMode, nvml_reason: Optional[str]) -> Inventory:
    from mineru_fit.devices.torch_backend import read_torch_inventory

    inventory = read_torch_inventory(kind)
    if not inventory.gpus:
        reason = "; ".join(r for r in (nvml_reason, inventory.reason) if r)
        return replace(inventory, reason=reason or "no GPU found")
    # torch already applied CUDA_VISIBLE_DEVICES and numbers GPUs as CUDA does: only cuda:N is left.
    return select_devices(inventory, mode, visible_devices=None, device_order="PCI_BUS_ID")


def _import_pynvml() -> Optional[Any]:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        logger.info("pynvml cannot be imported: %s", exc)
        return None
