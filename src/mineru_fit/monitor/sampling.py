"""Sampling: read NVML, engines and run records once, and freeze them into a Snapshot.

The Sampler is the monitor's I/O edge; it keeps each GPU's recent memory in a ring buffer and
the last minutes of snapshots, so the (pure) advisor can judge how long a state has lasted.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import httpx

from mineru_fit.devices import read_inventory
from mineru_fit.devices.types import Gpu, Inventory
from mineru_fit.doctor import ENV_VARS
from mineru_fit.monitor import procs
from mineru_fit.monitor.scrape import engine_targets, make_client, scrape_all
from mineru_fit.monitor.snapshot import EngineState, MemoryPoint, ProcessRow, Snapshot
from mineru_fit.runrecords import RunRecord, read_records

PathLike = Union[str, Path]
# Points per GPU in the memory ring buffer: two minutes at the default 1 s refresh.
HISTORY_POINTS = 120
# How far back the advisor may look; the longest rule window (60 s) plus slack.
RECENT_WINDOW_S = 120.0


class MemoryHistory:
    """Per-GPU ring buffers of used memory, keyed by UUID so a renumbering cannot mix GPUs."""

    def __init__(self, capacity: int = HISTORY_POINTS) -> None:
        self.capacity = max(1, capacity)
        self._points: dict[str, deque[MemoryPoint]] = {}

    def add(self, inventory: Inventory, time_s: float) -> tuple[tuple[MemoryPoint, ...], ...]:
        """Record this moment; return every GPU's buffer, in inventory order."""
        out = []
        for gpu in inventory.gpus:
            ring = self._points.setdefault(_key(gpu), deque(maxlen=self.capacity))
            ring.append(MemoryPoint(time_s=time_s, used_bytes=gpu.memory.used_bytes, free_bytes=gpu.memory.free_bytes))
            out.append(tuple(ring))
        return tuple(out)


def _key(gpu: Gpu) -> str:
    return gpu.uuid or f"index-{gpu.index}"


class Sampler:
    """Takes Snapshots. Everything it reads can be swapped for tests (clock, records, HTTP, /proc)."""

    def __init__(
        self,
        *,
        device_mode: Optional[str] = None,
        simulate: Optional[PathLike] = None,
        engine_urls: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        client: Optional[httpx.Client] = None,
        records: Callable[[], Iterable[RunRecord]] = read_records,
        proc_root: Optional[Path] = procs.PROC,
        environ: Mapping[str, str] = os.environ,
        history_points: int = HISTORY_POINTS,
    ) -> None:
        self.device_mode = device_mode
        self.simulate = Path(simulate) if simulate is not None else None
        self.engine_urls = tuple(engine_urls)
        self.clock = clock
        self._own_client = client is None
        self.client = client or make_client()
        self.read_records = records
        # Pids in a recorded snapshot belong to another machine: never look them up here.
        self.proc_root = None if self.simulate is not None else proc_root
        self.environ = environ
        self.history = MemoryHistory(history_points)
        self._recent: deque[Snapshot] = deque()

    @property
    def recent(self) -> tuple[Snapshot, ...]:
        """Earlier snapshots of the last RECENT_WINDOW_S seconds, oldest first."""
        return tuple(self._recent)

    def sample(self) -> Snapshot:
        """Read everything once; the snapshot joins `recent` for the next call."""
        now = self.clock()
        inventory = read_inventory(self.device_mode, simulate=self.simulate)
        records = tuple(self.read_records())
        engines = scrape_all(self.client, engine_targets(records, self.engine_urls))
        snapshot = Snapshot(
            time_s=now,
            inventory=inventory,
            memory_history=self.history.add(inventory, now),
            processes=process_rows(inventory, records, self.proc_root),
            engines=tuple(self._with_environ(e) for e in engines),
            records=records,
            environ={k: self.environ[k] for k in ENV_VARS if k in self.environ},
            simulated_from=str(self.simulate) if self.simulate is not None else None,
        )
        self._remember(snapshot)
        return snapshot

    def _with_environ(self, engine: EngineState) -> EngineState:
        if engine.record is None or self.proc_root is None:
            return engine
        return replace(engine, environ=procs.process_environ(engine.record.pid, ENV_VARS, self.proc_root))

    def _remember(self, snapshot: Snapshot) -> None:
        self._recent.append(snapshot)
        while self._recent and snapshot.time_s - self._recent[0].time_s > RECENT_WINDOW_S:
            self._recent.popleft()

    def history_before(self, snapshot: Snapshot) -> tuple[Snapshot, ...]:
        """The remembered snapshots older than `snapshot` (what the advisor calls history)."""
        return tuple(s for s in self._recent if s.time_s < snapshot.time_s)

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def process_rows(inventory: Inventory, records: Sequence[RunRecord], proc_root: Optional[Path]) -> tuple[ProcessRow, ...]:
    """One row per process per GPU (MIG instances' processes under their GPU), tagged with our engines."""
    rows = []
    for gpu in inventory.gpus:
        for process in (*gpu.processes, *(p for mig in gpu.mig_devices for p in mig.processes)):
            chain = procs.ancestry(process.pid, proc_root) if proc_root is not None else (process.pid,)
            rows.append(ProcessRow(
                gpu_index=gpu.index,
                pid=process.pid,
                name=process.name,
                used_bytes=process.used_bytes,
                kind=process.kind,
                user=procs.process_user(process.pid, proc_root) if proc_root is not None else "",
                engine=procs.owner_of(chain, records),
            ))
    return tuple(rows)
