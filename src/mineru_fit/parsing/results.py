"""What a parse produced: per page, per file and for the whole run, with a status and errors.

A run never dies on the first bad page or file (docling's way): each file ends `success`,
`partial` or `failure`, every page that was not converted carries the reason, and the run's
exit code says whether anything failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional


class Status(str, Enum):
    success = "success"
    partial = "partial"
    failure = "failure"


@dataclass(frozen=True)
class PageRecord:
    """How one page went: the row of `<name>_pages.json`."""

    page_idx: int                      # 0-based, as in content_list.json
    tier: str                          # vlm | flash
    ok: bool
    seconds: float                     # wall time from start to finish of this page
    batch_size: int = 0                # requests the engine could batch when the page ran (0: no model)
    concurrency: int = 0               # pages in flight allowed when the page ran
    retries: int = 0                   # attempts after the first
    peak_memory_bytes: Optional[int] = None  # GPU peak when the page finished (None: not measurable here)
    level: Optional[str] = None        # optimisation level of the engine that produced it
    blocks: int = 0                    # content_list items on the page
    error: Optional[str] = None        # why the page was not converted
    resumed: bool = False              # taken from a checkpoint of an earlier run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PageRecord":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class PageOutput:
    """A converted page: its content_list items, its Markdown and the images it refers to."""

    record: PageRecord
    items: tuple[dict[str, Any], ...] = ()
    markdown: str = ""
    images: tuple[tuple[str, bytes], ...] = ()  # (path relative to the output dir, bytes)
    # The page as docvortex model blocks (images inline): what MinerU 4's outputs are built from.
    model_blocks: Optional[tuple[dict[str, Any], ...]] = None


@dataclass(frozen=True)
class FileResult:
    """One input file: where its outputs are and how its pages went."""

    path: Path
    name: str
    tier: str
    status: Status
    pages: tuple[PageRecord, ...] = ()
    errors: tuple[str, ...] = ()       # file-level errors and per-page reasons, one line each
    notes: tuple[str, ...] = ()        # not failures: clamped page ranges, resumed pages, ...
    output_dir: Optional[Path] = None
    markdown_path: Optional[Path] = None

    @property
    def pages_ok(self) -> int:
        return sum(1 for p in self.pages if p.ok)

    @property
    def pages_failed(self) -> int:
        return sum(1 for p in self.pages if not p.ok)


def file_status(pages: tuple[PageRecord, ...]) -> Status:
    """success when every page converted, failure when none did, partial between."""
    ok = sum(1 for p in pages if p.ok)
    if pages and ok == len(pages):
        return Status.success
    return Status.partial if ok else Status.failure


@dataclass(frozen=True)
class ParseReport:
    """The whole run: one FileResult per input, in input order."""

    files: tuple[FileResult, ...]
    tier: str
    tier_reason: str
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def status(self) -> Status:
        if self.files and all(f.status is Status.success for f in self.files):
            return Status.success
        if any(f.status is not Status.failure for f in self.files):
            return Status.partial
        return Status.failure

    @property
    def exit_code(self) -> int:
        """0 when every page of every file converted, 1 when anything failed."""
        return 0 if self.status is Status.success else 1

    @property
    def pages_ok(self) -> int:
        return sum(f.pages_ok for f in self.files)

    @property
    def pages_failed(self) -> int:
        return sum(f.pages_failed for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "tier": self.tier,
            "tier_reason": self.tier_reason,
            "seconds": round(self.seconds, 3),
            "pages_ok": self.pages_ok,
            "pages_failed": self.pages_failed,
            "notes": list(self.notes),
            "files": [
                {
                    "path": str(f.path), "name": f.name, "tier": f.tier, "status": f.status.value,
                    "output_dir": str(f.output_dir) if f.output_dir else None,
                    "markdown": str(f.markdown_path) if f.markdown_path else None,
                    "pages_ok": f.pages_ok, "pages_failed": f.pages_failed,
                    "errors": list(f.errors), "notes": list(f.notes),
                }
                for f in self.files
            ],
        }
