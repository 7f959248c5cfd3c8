"""The driver's ledger of input files: each opened once (pages chosen, checkpoints read), every page
result landed in its checkpoint the moment it arrives, each document assembled when its last
page is in — the same files, by the same code, as a single-process parse.

The driver writes every output, so OUT only needs to be where the driver runs; keep it on storage
that outlives the driver so a rerun (from any machine) resumes from its checkpoints.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from mineru_fit.parsing.discover import InputFile
from mineru_fit.parsing.documents import OpenFile, finish_or_fail, open_input
from mineru_fit.parsing.observer import ParseObserver
from mineru_fit.parsing.options import ParseOptions
from mineru_fit.parsing.results import FileResult, PageOutput, PageRecord



class Book:
    def __init__(self, inputs: Sequence[InputFile], options: ParseOptions, tier: str, settings: dict[str, Any],
                 observer: ParseObserver) -> None:
        self.inputs = list(inputs)
        self.options = options
        self.tier = tier
        self.settings = settings  # what checkpoints record besides the input (dpi, model), as a plain parse
        self.observer = observer
        self.open: dict[int, OpenFile] = {}
        self.results: dict[int, FileResult] = {}

    def open_all(self) -> None:
        """Open every input, choose its pages and read its checkpoints; files with nothing to do finish now."""
        for file_no, inp in enumerate(self.inputs):
            opened = open_input(inp, self.options, self.tier, self.settings)
            if isinstance(opened, FileResult):
                self._record(file_no, opened)
                continue
            opened.doc.close()  # workers open it where they run; finish() closing it again is harmless
            self.open[file_no] = opened
            self.observer.file_started(inp.name, len(opened.pages), opened.resumed)
            if not opened.todo:
                self._finish(file_no)

    def work(self) -> list[tuple[int, str, list[int]]]:
        """(file number, path, pages to do) for every open file."""
        return [(n, str(f.input.path), f.todo) for n, f in self.open.items() if f.todo]

    def land(self, file_no: int, result: Any) -> None:
        """A page is back from the cluster: on disk now (images, then its checkpoint), or failed with its reason."""
        opened = self.open.get(file_no)
        if opened is None:
            return  # a batch Ray retried after its first answer already landed
        if isinstance(result, PageOutput):
            if result.record.page_idx in opened.done:
                return
            try:
                opened.emit(result)
            except OSError as exc:
                result = PageRecord(page_idx=result.record.page_idx, tier=self.tier, ok=False,
                                    seconds=result.record.seconds, level=result.record.level,
                                    error=f"could not write the page's outputs: {exc}")
                opened.fail(result)
            record = result.record if isinstance(result, PageOutput) else result
        else:
            record = result
            opened.fail(record)
        self.observer.page_finished(opened.input.name, record)
        if not opened.todo:
            self._finish(file_no)

    def finish_rest(self, error: Optional[str]) -> None:
        """Files still open after the cluster is done: their missing pages are reported, never skipped."""
        for file_no in list(self.open):
            self._finish(file_no, error or "the run stopped before this page")

    def files(self) -> tuple[FileResult, ...]:
        return tuple(self.results[n] for n in range(len(self.inputs)) if n in self.results)

    def _finish(self, file_no: int, error: Optional[str] = None) -> None:
        self._record(file_no, finish_or_fail(self.open.pop(file_no), error))

    def _record(self, file_no: int, result: FileResult) -> None:
        self.results[file_no] = result
        self.observer.file_finished(result)
