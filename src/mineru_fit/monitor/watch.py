"""`monitor watch`: the true peak of a command's GPU memory per phase. The pure part: samples -> phases.

Phases: "load" (start until the engine is ready), "first_request" (until its first completed
request) and "steady" (the rest) — an OOM that comes after warm-up shows as a steady peak above
the load peak. A phase never reached is null.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

SCHEMA = "mineru-fit/watch"
VERSION = 1
PHASES = ("load", "first_request", "steady")
# What the engines print once they serve: SGLang, our built-in server, uvicorn (vLLM and others).
DEFAULT_READY_PATTERN = (r"The server is fired up and ready to roll|mineru-fit built-in engine: serving"
                         r"|Application startup complete|Uvicorn running on")
_PORT_FLAG = re.compile(r"^--port(?:=(\d+))?$")


@dataclass(frozen=True)
class WatchSample:
    """One sample: seconds since the command started, its processes' GPU memory, every GPU's used memory."""

    time_s: float
    process_bytes: Optional[int]  # None: NVML listed none of the command's processes
    device_used_bytes: int


@dataclass(frozen=True)
class PhaseMarks:
    """When each phase ended (seconds since start) and what said so; None: not reached."""

    end_s: float
    load_end_s: Optional[float] = None
    load_ended_by: Optional[str] = None
    first_request_end_s: Optional[float] = None
    first_request_ended_by: Optional[str] = None


@dataclass(frozen=True)
class PhasePeak:
    start_s: float
    end_s: float
    ended_by: str
    peak_bytes: Optional[int]
    peak_at_s: Optional[float]
    samples: int


def memory_series(samples: Sequence[WatchSample]) -> tuple[Optional[str], list[int]]:
    """Which memory counts and its values: the command's own processes when NVML ever listed them,
    else the change in the devices' used memory since the first sample (containers list nobody)."""
    if not samples:
        return None, []
    if any(s.process_bytes is not None for s in samples):
        return "process", [s.process_bytes or 0 for s in samples]
    baseline = samples[0].device_used_bytes
    return "device_delta", [max(0, s.device_used_bytes - baseline) for s in samples]


def phase_bounds(marks: PhaseMarks) -> dict[str, Optional[tuple[float, float, str]]]:
    """(start, end, ended_by) per phase; a phase after one that never ended is None."""
    load_end = marks.load_end_s
    bounds: dict[str, Optional[tuple[float, float, str]]] = dict.fromkeys(PHASES)
    if load_end is None:
        bounds["load"] = (0.0, marks.end_s, "exit")
        return bounds
    load_end = min(load_end, marks.end_s)
    bounds["load"] = (0.0, load_end, marks.load_ended_by or "ready")
    first_end = marks.first_request_end_s
    if first_end is None:
        bounds["first_request"] = (load_end, marks.end_s, "exit")
        return bounds
    first_end = min(max(first_end, load_end), marks.end_s)
    bounds["first_request"] = (load_end, first_end, marks.first_request_ended_by or "first_request")
    bounds["steady"] = (first_end, marks.end_s, "exit")
    return bounds


def phase_peaks(samples: Sequence[WatchSample], marks: PhaseMarks) -> tuple[Optional[str], dict[str, Optional[PhasePeak]]]:
    """The memory source and each phase's peak; a sample on a boundary belongs to the later phase."""
    source, values = memory_series(samples)
    peaks: dict[str, Optional[PhasePeak]] = {}
    bounds = phase_bounds(marks)
    for phase in PHASES:
        span = bounds[phase]
        if span is None:
            peaks[phase] = None
            continue
        start, end, ended_by = span
        last = phase == PHASES[-1] or end >= marks.end_s
        inside = [(s.time_s, v) for s, v in zip(samples, values)
                  if s.time_s >= start and (s.time_s < end or (last and s.time_s <= end))]
        top = max(inside, key=lambda tv: tv[1]) if inside else None
        peaks[phase] = PhasePeak(
            start_s=round(start, 3), end_s=round(end, 3), ended_by=ended_by,
            peak_bytes=top[1] if top else None, peak_at_s=round(top[0], 3) if top else None, samples=len(inside),
        )
    return source, peaks


def infer_base_url(command: Sequence[str]) -> Optional[str]:
    """http://127.0.0.1:PORT when the command passes --port PORT (every engine we start does)."""
    for i, arg in enumerate(command):
        match = _PORT_FLAG.match(arg)
        if match is None:
            continue
        port = match.group(1) or (command[i + 1] if i + 1 < len(command) else "")
        if port.isdigit():
            return f"http://127.0.0.1:{port}"
    return None


def watch_result(
    *,
    command: Sequence[str],
    exit_code: Optional[int],
    started_at: str,
    samples: Sequence[WatchSample],
    marks: PhaseMarks,
    interval_ms: float,
    reason: Optional[str],
    notes: Sequence[str] = (),
    pids: Sequence[int] = (),
) -> dict[str, Any]:
    """The JSON `monitor watch` writes (schema "mineru-fit/watch", version 1; docs/monitor.md)."""
    source, peaks = phase_peaks(samples, marks)
    notes = list(notes)
    if source == "device_delta":
        notes.append("NVML listed none of the command's processes (a container?): peaks are the change in all GPUs' "
                     "used memory since the start, so other processes' allocations count too")
    if samples and marks.load_end_s is None:
        notes.append("no ready signal (health URL or ready pattern): the whole run counts as load")
    present = [(phase, p) for phase, p in peaks.items() if p is not None and p.peak_bytes is not None]
    best = max(present, key=lambda item: item[1].peak_bytes or 0) if present else None
    span_s = samples[-1].time_s - samples[0].time_s if len(samples) > 1 else 0.0
    rate = round((len(samples) - 1) / span_s, 1) if span_s > 0 else None
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "command": list(command),
        "exit_code": exit_code,
        "started_at": started_at,
        "duration_s": round(marks.end_s, 3),
        "interval_ms": interval_ms,
        "samples": len(samples),
        "sample_rate_hz": rate,
        "memory_source": source,
        "reason": reason,
        "notes": notes,
        "pids": sorted(set(pids)),
        "peak_bytes": best[1].peak_bytes if best else None,
        "peak_phase": best[0] if best else None,
        "phases": {phase: (asdict(p) if p is not None else None) for phase, p in peaks.items()},
    }
