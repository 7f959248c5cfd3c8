"""The monitor's JSON: one object per snapshot, schema "mineru-fit/monitor" version 1 (docs/monitor.md).

Keys are stable: a value that is unknown is null, never missing. Memory is in bytes, ratios 0..1.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

from mineru_fit.devices.types import Gpu
from mineru_fit.monitor.advice import Advice
from mineru_fit.monitor.snapshot import EngineState, ProcessRow, Snapshot

SCHEMA = "mineru-fit/monitor"
VERSION = 1


def snapshot_to_dict(snapshot: Snapshot, advice: Sequence[Advice] = ()) -> dict[str, Any]:
    """The documented JSON object for one snapshot and the advice given on it."""
    inv = snapshot.inventory
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "time": datetime.fromtimestamp(snapshot.time_s, tz=timezone.utc).isoformat(timespec="milliseconds"),
        "time_s": round(snapshot.time_s, 3),
        "backend": inv.backend,
        "driver_version": inv.driver_version,
        "cuda_driver_version": inv.cuda_driver_version,
        "nvml_memory_v2": inv.nvml_memory_v2,
        "reason": inv.reason,
        "warnings": list(inv.warnings),
        "simulated_from": snapshot.simulated_from,
        "gpus": [_gpu(snapshot, gpu) for gpu in inv.gpus],
        "engines": [_engine(e) for e in snapshot.engines],
        "advice": [asdict(a) for a in advice],
    }


def _gpu(snapshot: Snapshot, gpu: Gpu) -> dict[str, Any]:
    m = gpu.memory
    return {
        "index": gpu.index,
        "nvml_index": gpu.nvml_index,
        "name": gpu.name,
        "uuid": gpu.uuid,
        "memory": {
            "total_bytes": m.total_bytes,
            "free_bytes": m.free_bytes,
            "used_bytes": m.used_bytes,
            "reserved_bytes": m.reserved_bytes,
        },
        "memory_used_ratio": round(m.used_bytes / m.total_bytes, 4) if m.total_bytes else None,
        "utilization_pct": gpu.utilization_pct,
        "memory_utilization_pct": gpu.memory_utilization_pct,
        "temperature_c": gpu.temperature_c,
        "power_w": gpu.power_w,
        "power_limit_w": gpu.power_limit_w,
        "processes": [_process(p) for p in snapshot.processes_on(gpu.index)],
    }


def _process(p: ProcessRow) -> dict[str, Any]:
    engine: Optional[dict[str, Any]] = None
    if p.engine is not None:
        engine = {"engine": p.engine.engine, "level": p.engine.level, "pid": p.engine.pid, "base_url": p.engine.base_url}
    return {"pid": p.pid, "user": p.user or None, "name": p.name, "used_bytes": p.used_bytes, "kind": p.kind,
            "engine": engine}


def _engine(e: EngineState) -> dict[str, Any]:
    return {
        "metrics_url": e.metrics_url,
        "engine": e.name,
        "state": "ok" if e.reachable else e.error.split(":", 1)[0] if e.error else "error",
        "error": e.error,
        "pid": e.record.pid if e.record is not None else None,
        "level": e.current_level,
        "model": e.model,
        "max_model_len": e.max_model_len,
        "requests_running": e.requests_running,
        "requests_waiting": e.requests_waiting,
        "kv_cache_usage": e.kv_cache_usage,
        "max_total_tokens": e.max_total_tokens,
        "batch_limit": e.batch_limit,
        "memory_fraction": e.memory_fraction,
        "memory": {
            "allocated_bytes": e.allocated_bytes,
            "reserved_bytes": e.reserved_bytes,
            "peak_bytes": e.peak_bytes,
            "cap_bytes": e.memory_cap_bytes,
        },
        "oom_events": dict(e.oom_events),
        "generation_tokens_total": e.generation_tokens,
        "requests_completed_total": e.requests_completed,
    }
