"""The UI's memory panel: per GPU, used of total (NVML), and how much of it this service's engine holds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mineru_fit.devices import Inventory, read_inventory
from mineru_fit.runrecords import read_records
from mineru_fit.units import human


@dataclass(frozen=True)
class GpuMemoryRow:
    index: int
    name: str
    used_bytes: int
    total_bytes: int
    engine_bytes: Optional[int]        # None: the driver does not say per process (containers, WDDM)


@dataclass(frozen=True)
class MemoryPanel:
    rows: tuple[GpuMemoryRow, ...]
    note: str = ""                     # why there are no rows, or what the numbers leave out


def engine_pids(engine_url: Optional[str]) -> set[int]:
    """This process (the in-process engine), engines our supervisor started, and the engine at `engine_url`."""
    me = os.getpid()
    pids = {me}
    for record in read_records():
        if record.supervisor_pid == me or record.pid == me or (engine_url and record.base_url == engine_url):
            pids.add(record.pid)
    return pids


def memory_panel(inventory: Inventory, pids: set[int]) -> MemoryPanel:
    """The panel's numbers from one NVML snapshot; pure."""
    if not inventory.has_gpu:
        return MemoryPanel((), f"**no CUDA GPU** — {inventory.reason or 'none found'}; the flash tier needs none")
    rows = []
    unknown = False
    for gpu in inventory.gpus:
        mine = [p for p in gpu.processes if p.pid in pids]
        known = [p.used_bytes for p in mine if p.used_bytes is not None]
        engine = sum(known) if known else (0 if not mine and gpu.processes else None)
        unknown = unknown or engine is None
        rows.append(GpuMemoryRow(gpu.index, gpu.name, gpu.memory.used_bytes, gpu.memory.total_bytes, engine))
    note = "the driver does not report memory per process here, so the engine's share is unknown" if unknown else ""
    return MemoryPanel(tuple(rows), note)


def read_panel(device_mode: Optional[str], engine_url: Optional[str], simulate: Optional[Path] = None) -> MemoryPanel:
    """Read NVML now (a failure to read is shown, never raised)."""
    try:
        inventory = read_inventory(device_mode, simulate=simulate)
    except Exception as exc:  # the panel must never take the UI down
        return MemoryPanel((), f"GPU memory cannot be read: {exc}")
    return memory_panel(inventory, engine_pids(engine_url))


def panel_markdown(panel: MemoryPanel) -> str:
    if not panel.rows:
        return panel.note
    lines = ["| GPU | used / total | this engine |", "|---|---|---|"]
    for row in panel.rows:
        share = "unknown" if row.engine_bytes is None else human(row.engine_bytes)
        pct = 100 * row.used_bytes / row.total_bytes if row.total_bytes else 0
        lines.append(f"| {row.index}: {row.name} | {human(row.used_bytes)} / {human(row.total_bytes)} ({pct:.0f}%) | {share} |")
    if panel.note:
        lines.append(f"\n_{panel.note}_")
    return "\n".join(lines)
