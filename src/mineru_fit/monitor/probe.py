"""A fast NVML reader for `monitor watch`: per-process GPU memory and devices' used memory, nothing else.

read_inventory() asks NVML for names, clocks and power each time; at 20 Hz only the two
numbers the watch needs are read, over one NVML session kept open for the whole run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from mineru_fit.devices.nvml import COMPUTE_PROCESSES, GRAPHICS_PROCESSES, NvmlSession


@dataclass(frozen=True)
class ProbeReading:
    """Bytes per pid (summed over GPUs) and every GPU's used memory together."""

    per_pid_bytes: dict[int, int]
    device_used_bytes: int


class ProcessMemoryProbe:
    """Open once, read many times, close. `open()` says why when there is nothing to read."""

    def __init__(self, session: NvmlSession, handles: list[Any]) -> None:
        self.session = session
        self.handles = handles

    @classmethod
    def open(cls, simulate: Optional[Union[str, Path]] = None) -> tuple[Optional["ProcessMemoryProbe"], Optional[str]]:
        """The probe, or None and the reason (no NVML, no driver, no GPU)."""
        nvml = _nvml_module(simulate)
        if nvml is None:
            return None, "nvidia-ml-py is not installed — pip install nvidia-ml-py"
        session = NvmlSession(nvml)
        if not session.start():
            return None, f"no GPU to sample: {session.init_error}"
        count = session.query("nvmlDeviceGetCount") or 0
        handles = [h for h in (session.query("nvmlDeviceGetHandleByIndex", i) for i in range(count)) if h is not None]
        if not handles:
            session.close()
            return None, "no GPU to sample: NVML sees no GPU"
        return cls(session, handles), None

    def read(self) -> ProbeReading:
        per_pid: dict[int, int] = {}
        device_used = 0
        for handle in self.handles:
            info = self.session.query("nvmlDeviceGetMemoryInfo", handle)
            if info is not None:
                device_used += int(info.used)
            seen: dict[int, int] = {}
            for names in (COMPUTE_PROCESSES, GRAPHICS_PROCESSES):
                for entry in self.session.query(names, handle) or ():
                    used = getattr(entry, "usedGpuMemory", None)
                    # One pid in both lists (C+G) is one allocation, not two.
                    seen[int(entry.pid)] = max(seen.get(int(entry.pid), 0), int(used or 0))
            for pid, used in seen.items():
                per_pid[pid] = per_pid.get(pid, 0) + used
        return ProbeReading(per_pid_bytes=per_pid, device_used_bytes=device_used)

    def close(self) -> None:
        self.session.close()


def _nvml_module(simulate: Optional[Union[str, Path]]) -> Optional[Any]:
    if simulate is not None:
        from mineru_fit.devices.fake import FakeNvml

        return FakeNvml.from_file(Path(simulate))
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None
