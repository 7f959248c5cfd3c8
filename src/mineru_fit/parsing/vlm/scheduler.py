"""Pages through a VLM backend within the memory budget, adaptively, without losing one.

Up to `limit` pages run at once (the plan's batch size). When a page fails for memory (the
engine's out-of-memory 503, a server's 503/429), the limit halves and the same page goes back
to the front of the queue; a page that fails alone triggers a step down to the next level
(in-process: the engine is rebuilt there), once every page in flight has drained. Other errors
are retried a couple of times. A page that cannot be converted ends as a failure with its
reason — never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

from mineru_fit.errors import InputDocumentError
from mineru_fit.parsing.observer import ParseObserver
from mineru_fit.parsing.vlm.backends import PRESSURE
from mineru_fit.parsing.vlm.limits import PageLimit, Throttle

logger = logging.getLogger(__name__)

MAX_ERROR_RETRIES = 2          # retries of a page that failed for a reason other than memory
MAX_FLOOR_FAILURES = 3         # a server's 503 for one page alone, this often, fails the page
FLOOR_BACKOFF_S = 1.0          # wait before retrying alone on a server (it may be busy with others)
MEMORY_EVERY_S = 1.0


@dataclass
class PageTask:
    """One page on its way: how to render it, and its history."""

    file_no: int
    page_idx: int
    render: Callable[[], Any]           # runs on the render thread (PDFium is not thread-safe)
    image: Any = None
    retries: int = 0
    errors: int = 0
    floor_failures: int = 0
    started_s: Optional[float] = None
    launched_at: int = 0                # pages in flight allowed when its last attempt started
    last_error: str = ""
    history: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PageRun:
    """What the scheduler knows about a page that finished."""

    seconds: float
    retries: int
    batch_size: int
    concurrency: int
    level: Optional[str]
    peak_memory_bytes: Optional[int]


class Scheduler:
    def __init__(self, backend: Any, render_pool: Executor, observer: ParseObserver,
                 on_done: Callable[[PageTask, Any, list[Any], PageRun], Awaitable[None]],
                 on_fail: Callable[[PageTask, str, PageRun], Awaitable[None]]) -> None:
        self.backend = backend
        self.render_pool = render_pool
        self.observer = observer
        self.on_done = on_done
        self.on_fail = on_fail
        self.limit = PageLimit(backend.start_pages)
        self.throttle = Throttle(self._request_limit())
        self.retry: deque[PageTask] = deque()
        self.step_down_pending = False
        self.levels_exhausted = False

    def _request_limit(self) -> int:
        # Requests in flight follow the page limit: at the start as many as the engine batches.
        return max(1, self.backend.batch_size * self.limit.pages // self.limit.start)

    def _run_info(self, task: PageTask) -> PageRun:
        return PageRun(
            seconds=time.perf_counter() - (task.started_s or time.perf_counter()), retries=task.retries,
            batch_size=self.backend.batch_size, concurrency=task.launched_at, level=self.backend.level,
            peak_memory_bytes=self.backend.probe.peak(),
        )

    async def run(self, source: AsyncIterator[PageTask]) -> None:
        """Run every page `source` yields; returns when each has finished or failed for good."""
        in_flight: dict[asyncio.Task[Any], tuple[PageTask, int]] = {}
        pending: Optional[AsyncIterator[PageTask]] = source
        watcher = asyncio.create_task(self._watch_memory())
        try:
            while True:
                if self.step_down_pending and not in_flight:
                    await self._step_down()
                while not self.step_down_pending and len(in_flight) < self.limit.pages:
                    task = self.retry.popleft() if self.retry else None
                    if task is None and pending is not None:
                        try:
                            task = await pending.__anext__()
                        except StopAsyncIteration:
                            pending = None
                    if task is None:
                        break
                    task.launched_at = self.limit.pages
                    in_flight[asyncio.create_task(self._attempt(task))] = (task, self.limit.pages)
                if not in_flight:
                    if self.retry or self.step_down_pending:
                        continue
                    break
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    task, launched_at = in_flight.pop(finished)
                    await self._settle(task, launched_at, finished)
        finally:
            watcher.cancel()
            for running in in_flight:  # only after an error or an interrupt
                running.cancel()
            await asyncio.gather(watcher, *in_flight, return_exceptions=True)

    async def _attempt(self, task: PageTask) -> list[Any]:
        if task.started_s is None:
            task.started_s = time.perf_counter()
        if task.image is None:
            loop = asyncio.get_running_loop()
            task.image = await loop.run_in_executor(self.render_pool, task.render)
        return await self.backend.extract(task.image, self.throttle)

    async def _settle(self, task: PageTask, launched_at: int, finished: asyncio.Task[Any]) -> None:
        exc = finished.exception()
        if exc is None:
            self.limit.success()
            await self.throttle.resize(self._request_limit())
            await self.on_done(task, task.image, finished.result(), self._run_info(task))
            task.image = None
            return
        if isinstance(exc, InputDocumentError):  # the page itself cannot be rendered: no retry helps
            await self._fail(task, str(exc))
            return
        task.last_error = f"{type(exc).__name__}: {exc}"
        if self.backend.classify(exc) == PRESSURE:
            await self._pressure(task, launched_at)
            return
        task.errors += 1
        if task.errors > MAX_ERROR_RETRIES:
            await self._fail(task, f"failed {task.errors} times; last: {task.last_error}")
            return
        logger.warning("page %d failed (%s): retrying", task.page_idx + 1, task.last_error)
        self._requeue(task)

    async def _pressure(self, task: PageTask, launched_at: int) -> None:
        before = self.limit.pages
        at_floor = self.limit.pressure(launched_at)
        await self.throttle.resize(self._request_limit())
        if not at_floor:
            if self.limit.pages < before:
                self.observer.status(f"out of memory: {self.limit.pages} page(s) at once from now on")
            self._requeue(task)
            return
        task.floor_failures += 1
        if self.backend.can_step_down and not self.levels_exhausted:
            self.step_down_pending = True
            self._requeue(task)
            return
        if task.floor_failures >= MAX_FLOOR_FAILURES or self.levels_exhausted:
            where = (f"at level {self.backend.level}, the last one to try" if self.backend.can_step_down
                     else "on the server")
            await self._fail(task, f"out of memory even alone, {where} ({task.last_error}) — free GPU memory, "
                                   "lower --dpi, or parse with --tier flash")
            return
        await asyncio.sleep(FLOOR_BACKOFF_S * task.floor_failures)
        self._requeue(task)

    async def _step_down(self) -> None:
        before = self.backend.level
        self.observer.status(f"out of memory at level {before} even one page at a time: stepping down")
        level = await self.backend.step_down()
        self.step_down_pending = False
        if level is None:
            self.levels_exhausted = True
            self.observer.status(f"no level below {before}: pages that do not fit will fail")
            return
        self.limit.reset(self.backend.start_pages)
        await self.throttle.resize(self._request_limit())
        self.observer.status(f"now at level {level} ({self.backend.label})")

    def _requeue(self, task: PageTask) -> None:
        task.retries += 1
        task.history.append(task.last_error)
        self.retry.appendleft(task)  # the same page goes next: pages finish in order where they can

    async def _fail(self, task: PageTask, reason: str) -> None:
        task.image = None
        await self.on_fail(task, reason, self._run_info(task))

    async def _watch_memory(self) -> None:
        while True:
            try:
                self.observer.memory(await asyncio.to_thread(self.backend.probe.used))
            except Exception as exc:  # a gauge must never stop the parse
                logger.info("GPU memory reading failed: %s", exc)
                return
            await asyncio.sleep(MEMORY_EVERY_S)
