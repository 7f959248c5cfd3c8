"""The values the monitor passes around: one Snapshot freezes one moment of GPUs and engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from mineru_fit.devices.types import Gpu, Inventory
from mineru_fit.runrecords import RunRecord


@dataclass(frozen=True)
class MemoryPoint:
    """Device memory at one time (seconds since the epoch). On NVML v2 `used` excludes the driver reserve."""

    time_s: float
    used_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class EngineTag:
    """Which of our engines a GPU process belongs to (from its run record)."""

    engine: str
    level: str
    pid: int
    base_url: str

    @property
    def label(self) -> str:
        return f"mineru-fit {self.engine} {self.level}"


@dataclass(frozen=True)
class ProcessRow:
    """One process on one GPU, with what the monitor learnt about it beyond NVML."""

    gpu_index: int
    pid: int
    name: str
    used_bytes: Optional[int]
    kind: str
    user: str = ""
    engine: Optional[EngineTag] = None


@dataclass(frozen=True)
class EngineState:
    """What an engine's /metrics said (or why it said nothing). Ratios are 0..1."""

    metrics_url: str
    kind: str  # builtin | sglang | vllm | unknown
    error: Optional[str] = None  # "unreachable: ..." or "bad metrics: ..."; None when scraped
    record: Optional[RunRecord] = None
    model: Optional[str] = None
    level: Optional[str] = None
    max_model_len: Optional[int] = None
    requests_running: Optional[int] = None
    requests_waiting: Optional[int] = None
    kv_cache_usage: Optional[float] = None
    max_total_tokens: Optional[int] = None
    batch_limit: Optional[int] = None  # the batch the engine allows now (built-in: lowered after an OOM)
    memory_fraction: Optional[float] = None  # the engine's own report of its share flag (vLLM)
    allocated_bytes: Optional[int] = None
    reserved_bytes: Optional[int] = None
    peak_bytes: Optional[int] = None
    memory_cap_bytes: Optional[int] = None
    oom_events: Mapping[str, int] = field(default_factory=dict)  # action -> count (builtin only)
    generation_tokens: Optional[float] = None
    requests_completed: Optional[float] = None
    # Variables the advisor judges, from the engine process's environment (when readable).
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def oom_total(self) -> int:
        return sum(self.oom_events.values())

    @property
    def name(self) -> str:
        """The engine as a user calls it: the record's name, else what its metrics look like."""
        return self.record.engine if self.record is not None else self.kind

    @property
    def current_level(self) -> Optional[str]:
        return self.record.level if self.record is not None else self.level


@dataclass(frozen=True)
class Snapshot:
    """One moment: GPUs (NVML), their recent memory, processes, engines and run records."""

    time_s: float
    inventory: Inventory
    # Per GPU, by position in inventory.gpus: recent memory, oldest first (the ring buffer's copy).
    memory_history: tuple[tuple[MemoryPoint, ...], ...] = ()
    processes: tuple[ProcessRow, ...] = ()
    engines: tuple[EngineState, ...] = ()
    records: tuple[RunRecord, ...] = ()
    # The monitor's own environment, only the variables the advisor judges.
    environ: Mapping[str, str] = field(default_factory=dict)
    simulated_from: Optional[str] = None

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self.inventory.gpus

    def history_of(self, position: int) -> tuple[MemoryPoint, ...]:
        return self.memory_history[position] if position < len(self.memory_history) else ()

    def processes_on(self, gpu_index: int) -> tuple[ProcessRow, ...]:
        return tuple(p for p in self.processes if p.gpu_index == gpu_index)

    def gpus_of_engine(self, engine: EngineState) -> tuple[Gpu, ...]:
        """The GPUs an engine runs on: where its processes are; the only GPU if there is one."""
        if engine.record is not None:
            indices = {p.gpu_index for p in self.processes if p.engine is not None and p.engine.pid == engine.record.pid}
            if indices:
                return tuple(g for g in self.gpus if g.index in indices)
        return self.gpus if len(self.gpus) == 1 else ()
