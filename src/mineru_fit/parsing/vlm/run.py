"""The vlm tier over many files: one stream of pages through one backend, each file finished when its last page is.

Files open as their pages are needed, so a folder of a thousand PDFs holds only the pages in
flight. Every PDFium call (open, render, close) runs on one render thread.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, AsyncIterator, Optional, Sequence

from mineru_fit.parsing.builders.model_blocks import vlm_model_page
from mineru_fit.parsing.builders.vlm_blocks import page_items
from mineru_fit.parsing.discover import InputFile
from mineru_fit.parsing.documents import OpenFile, finish_or_fail, open_input
from mineru_fit.parsing.observer import ParseObserver
from mineru_fit.parsing.options import ParseOptions
from mineru_fit.parsing.renderers import mineru4
from mineru_fit.parsing.renderers.markdown import render_markdown
from mineru_fit.parsing.results import FileResult, PageOutput, PageRecord
from mineru_fit.parsing.vlm.scheduler import PageRun, PageTask, Scheduler


def page_output(page_idx: int, blocks: list[Any], image: Any, run: PageRun) -> PageOutput:
    """A converted page from MinerU's blocks: its row of the page table and what its outputs are built from."""
    record = PageRecord(
        page_idx=page_idx, tier="vlm", ok=True, seconds=round(run.seconds, 3), batch_size=run.batch_size,
        concurrency=run.concurrency, retries=run.retries, peak_memory_bytes=run.peak_memory_bytes,
        level=run.level, blocks=len(blocks),
    )
    if mineru4.available():  # MinerU 4's outputs are built from the whole document when it is written
        return PageOutput(record, model_blocks=tuple(vlm_model_page(blocks, image)))
    items, crops = page_items(blocks, image, page_idx)
    return PageOutput(record, tuple(items), render_markdown(items), tuple(crops))


def failed_record(page_idx: int, reason: str, run: PageRun) -> PageRecord:
    """The page-table row of a page that could not be converted, with why."""
    return PageRecord(page_idx=page_idx, tier="vlm", ok=False, seconds=round(run.seconds, 3),
                      batch_size=run.batch_size, concurrency=run.concurrency, retries=run.retries,
                      peak_memory_bytes=run.peak_memory_bytes, level=run.level, error=reason)


class VlmRun:
    def __init__(self, inputs: Sequence[InputFile], options: ParseOptions, backend: Any, observer: ParseObserver,
                 settings: dict[str, Any]) -> None:
        self.inputs = list(inputs)
        self.options = options
        self.backend = backend
        self.observer = observer
        self.settings = settings  # what checkpoints record besides the input (dpi, model)
        self.results: dict[int, FileResult] = {}
        self.open: dict[int, OpenFile] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mineru-fit-render")
        self.started = False

    async def _in_pool(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))

    async def run(self) -> list[FileResult]:
        try:
            scheduler = Scheduler(self.backend, self.pool, self.observer, self._done, self._failed)
            await scheduler.run(self._pages())
        finally:
            try:
                for file_no in list(self.open):  # only after an error: finish what is open, reporting the rest
                    await self._finish(file_no, error="the run stopped before this page")
                if self.started:
                    await self.backend.close()
            finally:
                self.pool.shutdown(wait=True)
        return [self.results[n] for n in range(len(self.inputs)) if n in self.results]

    async def _pages(self) -> AsyncIterator[PageTask]:
        for file_no, inp in enumerate(self.inputs):
            opened = await self._in_pool(open_input, inp, self.options, "vlm", self.settings)
            if isinstance(opened, FileResult):
                self._record(file_no, opened)
                continue
            self.open[file_no] = opened
            self.observer.file_started(inp.name, len(opened.pages), opened.resumed)
            todo = opened.todo
            if not todo:
                await self._finish(file_no)
                continue
            if not self.started:  # only when there is a page to parse: a finished run loads no model
                self.observer.status(f"starting the {self.backend.kind}")
                self.started = True  # close() must run even if start() fails half-way
                await self.backend.start()
                self.observer.status(f"parsing with the {self.backend.label}")
                for note in self.backend.notes:
                    self.observer.status(note)
            for page_idx in todo:
                yield PageTask(file_no, page_idx, partial(opened.doc.render, page_idx, self.options.dpi))

    async def _done(self, task: PageTask, image: Any, blocks: list[Any], run: PageRun) -> None:
        opened = self.open[task.file_no]
        try:
            output = await asyncio.to_thread(page_output, task.page_idx, blocks, image, run)
            await asyncio.to_thread(opened.emit, output)
        except Exception as exc:  # a page that cannot be built or written fails alone, with the reason
            await self._failed(task, f"could not write the page's outputs: {type(exc).__name__}: {exc}", run)
            return
        self.observer.page_finished(opened.input.name, output.record)
        await self._maybe_finish(task.file_no)

    async def _failed(self, task: PageTask, reason: str, run: PageRun) -> None:
        opened = self.open[task.file_no]
        record = failed_record(task.page_idx, reason, run)
        opened.fail(record)
        self.observer.page_finished(opened.input.name, record)
        await self._maybe_finish(task.file_no)

    async def _maybe_finish(self, file_no: int) -> None:
        if not self.open[file_no].todo:
            await self._finish(file_no)

    async def _finish(self, file_no: int, error: Optional[str] = None) -> None:
        opened = self.open.pop(file_no)
        self._record(file_no, await self._in_pool(finish_or_fail, opened, error))

    def _record(self, file_no: int, result: FileResult) -> None:
        self.results[file_no] = result
        self.observer.file_finished(result)
