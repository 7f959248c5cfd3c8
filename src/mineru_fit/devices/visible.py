"""Which GPUs this process may use: MINERU_DEVICE_MODE and CUDA_VISIBLE_DEVICES, as CUDA sees them.

Pure functions over an Inventory (no NVML, no environment reads), so every rule is testable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

from mineru_fit.devices.types import Gpu, Inventory
from mineru_fit.errors import UsageError

_MODE = re.compile(r"^(cuda(:(\d+))?|cpu|mps)$")


@dataclass(frozen=True)
class DeviceMode:
    """MINERU_DEVICE_MODE parsed: kind is "any" (unset), "cuda", "cpu" or "mps"; index for cuda:N."""

    kind: str
    index: Optional[int] = None

    def __str__(self) -> str:
        if self.kind == "cuda" and self.index is not None:
            return f"cuda:{self.index}"
        return self.kind


def parse_device_mode(value: Optional[str]) -> DeviceMode:
    """Parse MINERU_DEVICE_MODE (cuda, cuda:N, cpu, mps; None or "" = any GPU)."""
    if value is None or not value.strip():
        return DeviceMode("any")
    text = value.strip().lower()
    match = _MODE.match(text)
    if match is None:
        raise UsageError(f"MINERU_DEVICE_MODE={value!r} is not valid — accepted values: cuda, cuda:N, cpu, mps")
    if match.group(3) is not None:
        return DeviceMode("cuda", int(match.group(3)))
    return DeviceMode(text)


def apply_visible_devices(gpus: tuple[Gpu, ...], value: Optional[str]) -> tuple[tuple[Gpu, ...], list[str]]:
    """The GPUs CUDA would expose for CUDA_VISIBLE_DEVICES=`value`, renumbered from 0, plus warnings.

    Entries are NVML indices or (prefixes of) GPU-/MIG- UUIDs. As in CUDA, the first entry
    that matches nothing ends the list, and a repeated device hides every GPU."""
    if value is None:
        return gpus, []
    chosen: list[Gpu] = []
    entries = [entry.strip() for entry in value.split(",")]
    for position, entry in enumerate(entries):
        gpu = _match(entry, gpus)
        if gpu is None:
            ignored = [e for e in entries[position:] if e]
            warnings = []
            if chosen and ignored:
                warnings.append(
                    f"CUDA_VISIBLE_DEVICES={value!r}: {entry!r} matches no GPU, so CUDA ignores "
                    f"{', '.join(repr(e) for e in ignored)} — fix the list"
                )
            return _renumber(chosen), warnings
        if any(seen.uuid == gpu.uuid and seen.nvml_index == gpu.nvml_index for seen in chosen):
            return (), [f"CUDA_VISIBLE_DEVICES={value!r} names a GPU twice, so CUDA sees none — list each GPU once"]
        chosen.append(gpu)
    return _renumber(chosen), []


def select_devices(
    inventory: Inventory,
    mode: DeviceMode,
    visible_devices: Optional[str] = None,
    device_order: Optional[str] = None,
) -> Inventory:
    """Narrow a whole-machine inventory to what MINERU_DEVICE_MODE and CUDA_VISIBLE_DEVICES allow.

    Raises UsageError when cuda:N names a GPU that does not exist (and some GPU does)."""
    if not inventory.gpus:
        return inventory
    gpus, warnings = apply_visible_devices(inventory.gpus, visible_devices)
    warnings = list(inventory.warnings) + warnings + _order_warnings(gpus, visible_devices, device_order)
    if not gpus:
        return replace(
            inventory,
            gpus=(),
            reason=f"CUDA_VISIBLE_DEVICES={visible_devices!r} hides every GPU (NVML sees {len(inventory.gpus)})",
            warnings=tuple(warnings),
        )
    if mode.kind == "cuda" and mode.index is not None:
        if mode.index >= len(gpus):
            raise UsageError(_missing_gpu(mode.index, len(gpus), visible_devices))
        gpus = (gpus[mode.index],)
    for gpu in gpus:
        if gpu.mig_devices:
            warnings.append(
                f"GPU {gpu.index} has MIG enabled: CUDA runs on one MIG instance — set "
                f"CUDA_VISIBLE_DEVICES={gpu.mig_devices[0].uuid} (or another instance) to plan for it"
            )
    return replace(inventory, gpus=gpus, warnings=tuple(warnings))


def _match(entry: str, gpus: tuple[Gpu, ...]) -> Optional[Gpu]:
    if entry.isdigit():
        index = int(entry)
        return gpus[index] if index < len(gpus) else None
    upper = entry.upper()
    if upper.startswith("GPU-"):
        candidates = [gpu for gpu in gpus if gpu.uuid.upper().startswith(upper)]
    elif upper.startswith("MIG-"):
        candidates = [mig for gpu in gpus for mig in gpu.mig_devices if mig.uuid.upper().startswith(upper)]
    else:
        return None  # "-1", "", "NoDevFiles"...: CUDA stops here
    # An ambiguous prefix matches nothing in CUDA either.
    return candidates[0] if len(candidates) == 1 else None


def _renumber(gpus: list[Gpu]) -> tuple[Gpu, ...]:
    return tuple(replace(gpu, index=i) for i, gpu in enumerate(gpus))


def _order_warnings(gpus: tuple[Gpu, ...], visible_devices: Optional[str], device_order: Optional[str]) -> list[str]:
    # CUDA numbers the fastest GPU first unless told PCI order; NVML always uses PCI order.
    uses_indices = visible_devices is None or any(e.strip().isdigit() for e in visible_devices.split(","))
    if device_order == "PCI_BUS_ID" or not uses_indices or len({gpu.name for gpu in gpus}) < 2:
        return []
    return [
        "these GPUs differ and CUDA_DEVICE_ORDER is not PCI_BUS_ID, so CUDA's numbering may not match "
        "nvidia-smi's — export CUDA_DEVICE_ORDER=PCI_BUS_ID"
    ]


def _missing_gpu(index: int, count: int, visible_devices: Optional[str]) -> str:
    hint = f" with CUDA_VISIBLE_DEVICES={visible_devices!r}" if visible_devices is not None else ""
    plural = "GPU" if count == 1 else "GPUs"
    choices = "cuda:0" if count == 1 else f"cuda:0 … cuda:{count - 1}"
    return f"GPU cuda:{index} does not exist: this machine has {count} CUDA {plural}{hint} — use {choices}"
