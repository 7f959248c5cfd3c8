"""What an engine reported at startup beside what the plan predicted, kept for calibration.

Saved as <state>/startups/<engine>-<UTC time>-<pid>.json (schema "mineru-fit/engine-startup").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from mineru_fit.engines.command import EngineCommand
from mineru_fit.engines.startlog import StartupMemory
from mineru_fit.planner.plan import Plan
from mineru_fit.runrecords import state_dir
from mineru_fit.units import human

SCHEMA = "mineru-fit/engine-startup"


def startups_dir() -> Path:
    return state_dir() / "startups"


def logs_dir() -> Path:
    return state_dir() / "logs"


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class AttemptReport:
    """One try at starting the engine: the level, how it ended, and what it reported."""

    number: int
    level: str
    outcome: str              # healthy | oom | kv_cache | gpu_busy | load | crash | timeout | port_in_use | stopped
    detail: str
    log_path: str
    memory: StartupMemory = field(default_factory=StartupMemory)

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "level": self.level, "outcome": self.outcome, "detail": self.detail,
                "log_path": self.log_path, "memory": self.memory.to_dict()}


def record_body(plan: Plan, command: EngineCommand, memory: StartupMemory,
                attempts: list[AttemptReport], log_path: Path) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "version": 1,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "engine": plan.engine,
        "engine_version": command.installed_version,
        "flags_checked_against": command.flag_version,
        "level": plan.level,
        "device": plan.device.model_dump(),
        "predicted": {**plan.terms, "kv_cache_tokens": plan.kv_cache_tokens,
                      "predicted_peak_bytes": plan.predicted_peak_bytes, "memory_fraction": plan.memory_fraction},
        "measured": memory.to_dict(),
        "argv": list(command.argv),
        "env": dict(command.env),
        "log_path": str(log_path),
        "attempts": [a.to_dict() for a in attempts],
    }


def save_record(body: dict[str, Any], directory: Optional[Path] = None) -> Path:
    """Write atomically; the name sorts by time."""
    directory = directory or startups_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{body['engine']}-{utc_stamp()}-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, path)
    return path


def _cell(value: Optional[int]) -> str:
    return "—" if value is None else human(value)


def comparison_lines(plan: Plan, memory: StartupMemory) -> list[str]:
    """Predicted beside measured, per GPU, one line per term the engine reports."""
    rows = [
        ("weights", plan.terms["weights"], memory.weights_bytes),
        ("KV cache", plan.terms["kv_cache"], memory.kv_cache_bytes),
        ("CUDA graphs", plan.terms["cuda_graphs"], memory.cuda_graph_bytes),
    ]
    lines = [f"  {'':<14}{'predicted':>12}{'measured':>12}"]
    for name, predicted, measured in rows:
        lines.append(f"  {name:<14}{_cell(predicted):>12}{_cell(measured):>12}")
    tokens = "—" if memory.kv_cache_tokens is None else f"{memory.kv_cache_tokens:,}"
    lines.append(f"  {'KV tokens':<14}{plan.kv_cache_tokens:>12,}{tokens:>12}")
    if memory.free_after_start_bytes is not None:
        lines.append(f"  {'free after':<14}{'':>12}{human(memory.free_after_start_bytes):>12}")
    return lines
