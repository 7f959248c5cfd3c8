"""The engine actor: one per GPU, a Ray Data callable class. It plans for its own GPU when it
starts, runs its engine, and turns batches of rendered pages into page results, never raising.

Memory pressure is handled as in a single-process parse (the same Scheduler: fewer pages at
once, then the next level). When the actor itself dies, Ray restarts it (Ray Data's actor pool
restarts actors and retries their batches by default); on restart the registry says how often
it died and which pages were in flight, so it plans again, starts one level lower per restart,
and counts those pages' retries. A page in flight at MAX_PAGE_CRASHES deaths fails with that
reason instead of taking the actor down forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

from mineru_fit.errors import MineruFitError
from mineru_fit.parsing.observer import ParseObserver
from mineru_fit.parsing.vlm.run import failed_record, page_output
from mineru_fit.parsing.vlm.scheduler import PageRun, PageTask, Scheduler
from mineru_fit.scale.job import ActorJob
from mineru_fit.scale.stages import Result, decode_image, result_rows

logger = logging.getLogger(__name__)

MAX_PAGE_CRASHES = 2  # deaths of the actor with one page in flight before that page fails on its own


@dataclass
class _Page:
    file_no: int
    page_idx: int
    image: Any
    error: str
    crashes: int


class _Reporter(ParseObserver):
    """The Scheduler's status lines and GPU memory, sent to the registry (fire and forget)."""

    def __init__(self, registry: Any, actor_id: str) -> None:
        self.registry = registry
        self.actor_id = actor_id

    def status(self, text: str) -> None:
        self.registry.event.remote(self.actor_id, text)

    def memory(self, used_bytes: Optional[int]) -> None:
        if used_bytes is not None:
            self.registry.gpu_memory.remote(self.actor_id, used_bytes)


def _no_run(crashes: int) -> PageRun:
    return PageRun(seconds=0.0, retries=crashes, batch_size=0, concurrency=0, level=None, peak_memory_bytes=None)


class EngineActor:
    def __init__(self, spec: ActorJob) -> None:
        import ray

        self.spec = spec
        self.registry = ray.get_actor(spec.registry)
        self.actor_id = ray.get_runtime_context().get_actor_id()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="mineru-fit-actor-loop", daemon=True).start()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mineru-fit-actor")
        self.reporter = _Reporter(self.registry, self.actor_id)
        self.engine: Any = None
        self.error: Optional[str] = None
        self.restarts, self.lost = ray.get(self.registry.register.remote(self.actor_id, {"pid": os.getpid()}))
        self._start()

    def _start(self) -> None:
        """Plan (and tell the driver at once), then load the engine; a failure fails this actor's pages, with why."""
        from mineru_fit.scale.actor_engine import plan_actor, start_engine

        where = {"pid": os.getpid(), "restarts": self.restarts}
        try:
            planned = plan_actor(self.spec, self.restarts)
        except MineruFitError as exc:
            self.error = str(exc)
            self.registry.planned.remote(self.actor_id, {**where, "label": f"pid {os.getpid()}",
                                                         "summary": f"cannot parse: {exc}", "error": self.error})
            return
        self.registry.planned.remote(self.actor_id, {**planned.info, **where})
        if planned.error:
            self.error = planned.error
            return
        try:
            self.engine = self._await(start_engine(self.spec, planned, self.reporter.status))
        except Exception as exc:  # any start failure fails this actor's pages with the reason, not the run
            logger.exception("engine actor failed to start")
            self.error = f"the engine did not start: {type(exc).__name__}: {exc}"
            self.reporter.status(self.error)

    def _await(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        import ray

        started = time.perf_counter()
        pages = [
            _Page(int(f), int(p), (img, w, h), str(err), self.lost.get((int(f), int(p)), 0))
            for f, p, img, w, h, err in zip(batch["file_no"], batch["page_idx"], batch["image"], batch["width"],
                                            batch["height"], batch["error"])
        ]
        # Waited for: if this process dies a moment later, the registry must already know what it held.
        ray.get(self.registry.begin.remote(self.actor_id, [(p.file_no, p.page_idx) for p in pages]))
        try:
            results = self._await(self._run(pages))
        except Exception as exc:  # never raise into Ray Data: that would fail the whole dataset
            logger.exception("engine actor batch failed")
            results = [(p.file_no, failed_record(p.page_idx, f"the engine actor failed: {type(exc).__name__}: {exc}",
                                                 _no_run(p.crashes))) for p in pages]
        self.registry.end.remote(self.actor_id, len(pages), time.perf_counter() - started)
        label = self.engine.label if self.engine is not None else f"pid {os.getpid()}"
        return result_rows(results, label)

    async def _run(self, pages: list[_Page]) -> list[tuple[int, Result]]:
        results: dict[tuple[int, int], Result] = {}
        runnable: list[_Page] = []
        for page in pages:
            reason = page.error or self.error
            if page.crashes >= MAX_PAGE_CRASHES:
                reason = (f"the engine process died {page.crashes} times while this page was in flight — "
                          "parse it alone, or at a lower --level")
            if reason:
                results[(page.file_no, page.page_idx)] = failed_record(page.page_idx, reason, _no_run(page.crashes))
            else:
                runnable.append(page)
        if runnable:
            await self.engine.ensure_running()

            async def done(task: PageTask, image: Any, blocks: list[Any], run: PageRun) -> None:
                try:
                    results[(task.file_no, task.page_idx)] = await asyncio.to_thread(
                        page_output, task.page_idx, blocks, image, run)
                except Exception as exc:  # a page that cannot be built fails alone, with the reason
                    await failed(task, f"could not build the page's outputs: {type(exc).__name__}: {exc}", run)

            async def failed(task: PageTask, reason: str, run: PageRun) -> None:
                results[(task.file_no, task.page_idx)] = failed_record(task.page_idx, reason, run)

            async def source() -> AsyncIterator[PageTask]:
                for page in runnable:
                    data, width, height = page.image
                    yield PageTask(page.file_no, page.page_idx, render=lambda d=data, w=width, h=height: decode_image(d, w, h),
                                   retries=page.crashes)

            await Scheduler(self.engine.backend, self.pool, self.reporter, done, failed).run(source())
        return [(key[0], results[key]) for key in ((p.file_no, p.page_idx) for p in pages)]

