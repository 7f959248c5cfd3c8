"""What a parse reports while it runs; the CLI draws it as a progress bar, tests record it."""

from __future__ import annotations

from typing import Optional

from mineru_fit.parsing.results import FileResult, PageRecord


class ParseObserver:
    """Every method is optional: the base class ignores everything."""

    def file_started(self, name: str, pages: int, resumed: int) -> None:
        """A file is open: `pages` selected, `resumed` of them already done by an earlier run."""

    def page_finished(self, name: str, record: PageRecord) -> None:
        """A page converted or failed for good (never called for resumed pages)."""

    def file_finished(self, result: FileResult) -> None: ...

    def status(self, text: str) -> None:
        """What the run is doing besides pages: loading the model, stepping down a level, ..."""

    def memory(self, used_bytes: Optional[int]) -> None:
        """Current GPU memory (None where it cannot be read)."""
