"""Which device a command plans for: --vram, --simulate, --gpu, or this machine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from mineru_fit.errors import UsageError
from mineru_fit.planner.inputs import Hardware
from mineru_fit.settings import Settings


def resolve_hardware(
    settings: Settings,
    *,
    vram_gib: Optional[float] = None,
    gpu_index: Optional[int] = None,
    simulate: Optional[Path] = None,
    gpus: Optional[int] = None,
    gpus_used: int = 1,
) -> Hardware:
    """A hypothetical card (--vram), a recorded one (--simulate), or the real GPU/CPU here."""
    if vram_gib is not None:
        if not vram_gib > 0:
            raise UsageError(f"--vram {vram_gib:g} is not a memory size — give the card's GiB, e.g. --vram 8")
        if simulate is not None or gpu_index is not None:
            raise UsageError("--vram plans for a hypothetical card: drop --gpu/--simulate, or drop --vram")
        # A hypothetical setup has as many cards as --tp-size × --dp-size use, unless --gpus says.
        return Hardware.from_vram(vram_gib, gpu_count=gpus or max(1, gpus_used),
                                  virtual_vram_bytes=settings.virtual_vram_bytes)
    from mineru_fit.devices import read_inventory

    mode = f"cuda:{gpu_index}" if gpu_index is not None else settings.device_mode
    inventory = read_inventory(mode, simulate=simulate)
    if not inventory.has_gpu:
        if gpu_index is None and (settings.device_mode or "").startswith("cuda"):
            # The user asked for a GPU: running on the CPU instead would be a silent switch.
            raise UsageError(f"MINERU_DEVICE_MODE={settings.device_mode} but no CUDA GPU was found "
                             f"({inventory.reason}) — unset it (or set cpu) to run on the CPU, or plan for a card "
                             "with --vram GB")
        from mineru_fit.devices.host import available_ram_bytes

        ram = available_ram_bytes() or 0
        return replace(Hardware.cpu(ram), name=f"the CPU (no CUDA GPU found: {inventory.reason})")
    # The engine starts on the first GPUs it may use (--gpu N plans for another one); with
    # tp/dp over several, the one with the least free memory bounds every replica and shard.
    used = inventory.gpus[: max(1, gpus_used)]
    gpu = min(used, key=lambda g: g.memory.free_bytes)
    hw = Hardware.from_gpu(
        name=gpu.name,
        total_bytes=gpu.memory.total_bytes,
        free_bytes=gpu.memory.free_bytes,
        gpu_count=gpus or len(inventory.gpus),
        compute_capability=gpu.compute_capability,
        virtual_vram_bytes=settings.virtual_vram_bytes,
    )
    if len(used) > 1:
        hw = replace(hw, budget_reason=f"GPU {gpu.index}, the tightest of GPUs {used[0].index}–{used[-1].index}: "
                                       + hw.budget_reason)
    return hw
