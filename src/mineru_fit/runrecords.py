"""Run records: one small JSON file per engine we started, so the monitor can find it.

Written by engines/ when an engine is up, removed when it stops; read by monitor/. Kept at
the bottom of the layers (no imports of ours) so both can use it.

Location: $MINERU_FIT_STATE_DIR/runs/, else $XDG_STATE_HOME/mineru-fit/runs/, else
~/.local/state/mineru-fit/runs/. File name: <engine>-<pid>.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional


def state_dir() -> Path:
    """Where mineru-fit keeps what outlives a process: run records, engine logs, startup records."""
    base = os.environ.get("MINERU_FIT_STATE_DIR")
    if base:
        return Path(base).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(state) / "mineru-fit"


def runs_dir() -> Path:
    return state_dir() / "runs"


@dataclass(frozen=True)
class RunRecord:
    engine: str                 # builtin | sglang | vllm
    level: str
    pid: int                    # the engine process (the one holding GPU memory)
    base_url: str               # e.g. http://127.0.0.1:30000
    metrics_url: str            # Prometheus endpoint
    started_at: str             # ISO 8601, UTC
    argv: list[str] = field(default_factory=list)
    plan: Optional[dict[str, Any]] = None  # the Plan as JSON (planner.Plan.model_dump())
    supervisor_pid: Optional[int] = None

    @property
    def path(self) -> Path:
        return runs_dir() / f"{self.engine}-{self.pid}.json"


def write_record(record: RunRecord) -> Path:
    """Write atomically: a reader never sees half a file."""
    path = record.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2))
    os.replace(tmp, path)
    return path


def remove_record(record: RunRecord) -> None:
    try:
        record.path.unlink()
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_records(*, only_alive: bool = True) -> list[RunRecord]:
    """Every readable record; stale ones (process gone) are skipped, unreadable ones ignored."""
    records = []
    directory = runs_dir()
    if not directory.is_dir():
        return records
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            record = RunRecord(**data)
        except (OSError, ValueError, TypeError):
            continue
        if only_alive and not _alive(record.pid):
            continue
        records.append(record)
    return records
