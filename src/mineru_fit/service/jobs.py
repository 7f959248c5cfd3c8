"""A parse job as the service keeps it: what was asked, which files, how far it got, how it ended."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Optional


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"   # every page of every file converted
    partial = "partial"       # some pages or files were not (each with its reason)
    failed = "failed"         # nothing converted, or the job could not run (crash, timeout)

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.partial, JobStatus.failed)


@dataclass(frozen=True)
class JobOptions:
    """The request's choices, kept with the job so a restart runs it the same way."""

    backend: str = "auto"                  # as the client named it (echoed in the response)
    tier: str = "flash"                    # vlm | flash: decided when the job is accepted
    tier_reason: str = ""
    pages: Optional[str] = None            # 1-based selection text for parsing.PageSelection, None: all
    return_md: bool = True
    return_content_list: bool = False
    return_images: bool = False
    zip: bool = False                      # the result's default format

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "JobOptions":
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class JobFile:
    """One uploaded file, stored under the job's inputs/ with a safe, unique name."""

    name: str              # output name (the stored file's stem): <out>/<name>/<tier>/<name>.md
    filename: str          # stored file name
    original: str          # the name the client sent (only ever shown, never used as a path)
    size_bytes: int
    kind: str              # pdf | image
    pages: int             # pages this job parses in it

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobFile":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Job:
    """One row of the job store."""

    id: str
    status: JobStatus
    options: JobOptions
    files: tuple[JobFile, ...]
    pages_total: int
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    attempts: int = 0
    pages_done: int = 0
    pages_failed: int = 0
    error: Optional[str] = None
    report: Optional[dict[str, Any]] = None   # parsing.ParseReport.to_dict() of the finished run


@dataclass
class Progress:
    """Live counts of a running job (kept in memory; the store gets the final ones)."""

    pages_total: int
    pages_done: int = 0        # settled: converted or failed for good (resumed pages count as converted)
    pages_failed: int = 0
    current: str = ""          # what the worker is doing now
    files: dict[str, int] = field(default_factory=dict)  # pages settled per file

    def apply(self, event: dict[str, Any]) -> Optional[bool]:
        """Fold in one event of the worker (file started, page settled, status); a page's ok flag, else None."""
        kind = event.get("event")
        if kind == "file":
            resumed = int(event.get("resumed", 0))
            self.files[str(event.get("name"))] = resumed
            self.pages_done += resumed
        elif kind == "page":
            ok = bool(event.get("ok"))
            self.pages_done += 1
            self.pages_failed += 0 if ok else 1
            name = str(event.get("name"))
            self.files[name] = self.files.get(name, 0) + 1
            return ok
        elif kind == "status":
            self.current = str(event.get("text", ""))
        return None
