"""Fallback when NVML is unavailable: ask torch (CUDA or Apple MPS) what it can see.

Importing torch costs seconds, so this module never imports it at load time; callers reach it
only when NVML is out and the platform or MINERU_DEVICE_MODE makes torch worth asking.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from typing import Any, Optional

from mineru_fit.devices.types import Gpu, Inventory, MemoryInfo

logger = logging.getLogger(__name__)


def torch_installed() -> bool:
    """True when torch can be imported (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def read_torch_inventory(kind: str, torch: Optional[Any] = None) -> Inventory:
    """GPUs torch sees for `kind` ("cuda" or "mps"); `torch` is the module (imported here if None)."""
    if torch is None:
        if not torch_installed():
            return Inventory(backend="none", reason="torch is not installed")
        torch = importlib.import_module("torch")
    try:
        return _read_mps(torch) if kind == "mps" else _read_cuda(torch)
    except (RuntimeError, AttributeError) as exc:  # a broken CUDA/Metal setup surfaces here
        logger.info("torch could not read %s devices: %s", kind, exc)
        return Inventory(backend="none", reason=f"torch could not read {kind} devices ({exc})")


def _read_cuda(torch: Any) -> Inventory:
    version = getattr(torch, "__version__", "?")
    if not torch.cuda.is_available():
        return Inventory(backend="none", reason=f"torch {version} sees no CUDA device")
    gpus = []
    # torch has already applied CUDA_VISIBLE_DEVICES: these are CUDA ordinals.
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free_bytes, total_bytes = torch.cuda.mem_get_info(index)
        gpus.append(
            Gpu(
                index=index,
                name=str(props.name),
                memory=MemoryInfo(
                    total_bytes=int(total_bytes),
                    free_bytes=int(free_bytes),
                    used_bytes=int(total_bytes) - int(free_bytes),
                ),
                uuid=_uuid(getattr(props, "uuid", None)),
                compute_capability=(int(props.major), int(props.minor)),
            )
        )
    return Inventory(
        backend="torch",
        gpus=tuple(gpus),
        warnings=("NVML is unavailable: memory comes from torch (no processes, temperature or power)",),
    )


def _read_mps(torch: Any) -> Inventory:
    version = getattr(torch, "__version__", "?")
    mps_backend = getattr(getattr(torch, "backends", None), "mps", None)
    if mps_backend is None or not mps_backend.is_available():
        return Inventory(backend="none", reason=f"torch {version} sees no MPS device")
    mps = torch.mps
    # Metal's recommended working set is the practical ceiling on unified memory (torch >= 2.5).
    recommended = getattr(mps, "recommended_max_memory", None)
    total_bytes = int(recommended()) if recommended is not None else _physical_memory_bytes()
    # Only this process's Metal allocations: other apps share the same unified memory unseen.
    used_bytes = int(mps.driver_allocated_memory())
    return Inventory(
        backend="mps",
        gpus=(
            Gpu(
                index=0,
                name="Apple GPU (MPS)",
                memory=MemoryInfo(
                    total_bytes=total_bytes, free_bytes=max(total_bytes - used_bytes, 0), used_bytes=used_bytes
                ),
            ),
        ),
        warnings=("MPS shares system memory: free memory is an upper bound (other apps are not counted)",),
    )


def _uuid(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # torch prints the bare UUID; NVML and CUDA_VISIBLE_DEVICES use the GPU- form.
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _physical_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0
