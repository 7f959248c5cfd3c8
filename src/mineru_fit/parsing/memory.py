"""Current GPU memory for the progress bar and the page table: torch in-process, else NVML, else nothing."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

NVML_EVERY_S = 1.0  # an NVML inventory walks every process: at most once a second


class MemoryProbe:
    """`used()` and `peak()` in bytes, or None where this machine cannot say."""

    def __init__(self, used: Callable[[], Optional[int]], peak: Optional[Callable[[], Optional[int]]] = None) -> None:
        self._used = used
        self._peak = peak
        self._highest: Optional[int] = None

    def used(self) -> Optional[int]:
        value = self._used()
        if value is not None:
            self._highest = value if self._highest is None else max(self._highest, value)
        return value

    def peak(self) -> Optional[int]:
        if self._peak is not None:
            return self._peak()
        return self._highest


def none_probe() -> MemoryProbe:
    return MemoryProbe(lambda: None)


def torch_probe(device: Any) -> MemoryProbe:
    """The caching allocator of this process on `device` (a CUDA torch.device)."""
    import torch

    return MemoryProbe(lambda: int(torch.cuda.memory_reserved(device)),
                       lambda: int(torch.cuda.max_memory_reserved(device)))


def nvml_probe(device_mode: Optional[str]) -> MemoryProbe:
    """Memory used on the first GPU this process may use, whoever holds it (a server elsewhere on it)."""
    state: dict[str, Any] = {"at": 0.0, "value": None, "dead": False}

    def read() -> Optional[int]:
        if state["dead"]:
            return None
        now = time.monotonic()
        if now - state["at"] >= NVML_EVERY_S:
            state["at"] = now
            try:
                from mineru_fit.devices import read_inventory

                inventory = read_inventory(device_mode)
            except Exception as exc:  # the monitor of a parse must never fail the parse
                logger.info("GPU memory unavailable: %s", exc)
                state["dead"] = True
                return None
            if not inventory.gpus:
                state["dead"] = True
                return None
            state["value"] = inventory.gpus[0].memory.used_bytes
        return state["value"]

    return MemoryProbe(read)
