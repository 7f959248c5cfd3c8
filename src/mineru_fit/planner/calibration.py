"""Runtime terms measured per GPU class, each traced to a file in docs/measurements/.

benchmarks/gpu_memory.py writes data/calibration.json after a run on a real GPU; until a GPU
class has an entry, the estimates in constants.py apply and plans say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Optional

from mineru_fit.planner import constants as C


@dataclass(frozen=True)
class GpuCalibration:
    gpu_class: str          # e.g. "H100"
    name_contains: str      # matched against the GPU's name, case-insensitively
    cuda_context_bytes: int
    source: str             # the measurement file it comes from


@lru_cache(maxsize=1)
def calibrations() -> tuple[GpuCalibration, ...]:
    text = resources.files("mineru_fit.planner").joinpath("data/calibration.json").read_text()
    return tuple(GpuCalibration(**entry) for entry in json.loads(text)["gpu_classes"])


def for_gpu(name: str, table: Optional[tuple[GpuCalibration, ...]] = None) -> Optional[GpuCalibration]:
    lowered = name.lower()
    for entry in table if table is not None else calibrations():
        if entry.name_contains.lower() in lowered:
            return entry
    return None


def cuda_context_bytes(name: str, table: Optional[tuple[GpuCalibration, ...]] = None) -> tuple[int, Optional[str]]:
    """The context for this GPU: measured when its class was calibrated, else the estimate."""
    entry = for_gpu(name, table)
    if entry is None:
        return C.CUDA_CONTEXT_BYTES, None
    return entry.cuda_context_bytes, entry.source
