"""Dynamic batching with out-of-memory recovery; knows nothing of torch or HTTP.

Requests queue in arrival order; the loop takes up to the batch cap, waiting at most
`wait_s` for the batch to fill, and runs requests that sample alike together in one worker
thread (one model, one stream of work). Nothing starves: what a batch cannot take runs next.

On out-of-memory: release, halve the batch and retry both halves (and lower the cap for the
batches that follow, raising it again after a run of successes); a single request that still
fails is retried once with smaller images, else answered 503. Every request gets an answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from mineru_fit.engines.builtin.jobs import Job, Outcome

logger = logging.getLogger(__name__)

# Successful batches at the lowered cap before trying one more request per batch.
RECOVER_AFTER_BATCHES = 8


class BatchObserver:
    """What the batcher reports; the server's metrics implement it."""

    def queued(self, waiting: int) -> None: ...
    def batch_started(self, size: int, tokens: int) -> None: ...
    def batch_finished(self, size: int, outcomes: list[Outcome], seconds: float) -> None: ...
    def oom(self, action: str) -> None: ...
    def cap_changed(self, cap: int) -> None: ...


class Batcher:
    def __init__(
        self,
        run: Callable[[list[Job]], list[Outcome]],
        *,
        max_batch: int,
        wait_s: float,
        is_oom: Callable[[BaseException], bool],
        release: Callable[[], None] = lambda: None,
        shrink: Optional[Callable[[Job], Job]] = None,
        observer: Optional[BatchObserver] = None,
    ) -> None:
        self.run = run
        self.max_batch = max(1, max_batch)
        self.cap = self.max_batch
        self.wait_s = wait_s
        self.is_oom = is_oom
        self.release = release
        self.shrink = shrink
        self.observer = observer or BatchObserver()
        self._successes = 0
        self._queue: "asyncio.Queue[tuple[Job, asyncio.Future[Outcome]]]" = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mineru-fit-generate")
        self._task: Optional[asyncio.Task[None]] = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="mineru-fit-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_result(Outcome(error_status=503, error_message="the server is shutting down — retry"))
        self._pool.shutdown(wait=True, cancel_futures=False)

    async def submit(self, job: Job) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, future))
        self.observer.queued(self._queue.qsize())
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.cap:
                remaining = deadline - loop.time()
                try:
                    batch.append(self._queue.get_nowait() if remaining <= 0 else
                                 await asyncio.wait_for(self._queue.get(), remaining))
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
            self.observer.queued(self._queue.qsize())
            groups: "OrderedDict[object, list[tuple[Job, asyncio.Future[Outcome]]]]" = OrderedDict()
            for item in batch:
                groups.setdefault(item[0].key, []).append(item)
            for items in groups.values():
                jobs = [job for job, _ in items]
                self.observer.batch_started(len(jobs), sum(j.prompt_tokens + j.max_new_tokens for j in jobs))
                start = loop.time()
                try:
                    outcomes = await loop.run_in_executor(self._pool, self._execute, jobs)
                except Exception as exc:  # never lose a request, whatever broke
                    logger.exception("batch failed")
                    outcomes = [Outcome(error_status=500, error_message=f"generation failed: {exc}")] * len(jobs)
                self.observer.batch_finished(len(jobs), outcomes, loop.time() - start)
                for (_, future), outcome in zip(items, outcomes):
                    if not future.done():
                        future.set_result(outcome)

    def _execute(self, jobs: list[Job]) -> list[Outcome]:
        """Run jobs, recovering from out-of-memory by splitting, then shrinking images."""
        try:
            outcomes = self.run(jobs)
        except Exception as exc:
            if not self.is_oom(exc):
                if len(jobs) > 1:  # isolate the request that broke the batch
                    return [o for job in jobs for o in self._execute([job])]
                logger.exception("generation failed")
                return [Outcome(error_status=500, error_message=f"generation failed: {exc}")]
            self.release()
            return self._after_oom(jobs, exc)
        self._succeeded()
        return outcomes

    def _after_oom(self, jobs: list[Job], exc: BaseException) -> list[Outcome]:
        if len(jobs) > 1:
            self.observer.oom("split")
            self._lower_cap(len(jobs) // 2)
            half = len(jobs) // 2
            logger.warning("out of memory at batch %d: retrying as %d + %d", len(jobs), half, len(jobs) - half)
            return self._execute(jobs[:half]) + self._execute(jobs[half:])
        job = jobs[0]
        if self.shrink is not None and job.images and not job.shrunk:
            self.observer.oom("shrink")
            logger.warning("out of memory on one request: retrying with images at half their pixels")
            return self._execute([self.shrink(job)])
        self.observer.oom("rejected")
        return [Outcome(
            error_status=503,
            error_message=f"out of GPU memory even for this request alone ({exc}) — retry later, send a smaller "
                          "image, or restart the server at a more aggressive --level",
        )]

    def _lower_cap(self, cap: int) -> None:
        if cap < self.cap:
            self.cap = max(1, cap)
            self._successes = 0
            self.observer.cap_changed(self.cap)

    def _succeeded(self) -> None:
        if self.cap >= self.max_batch:
            return
        self._successes += 1
        if self._successes >= RECOVER_AFTER_BATCHES:
            self.cap += 1
            self._successes = 0
            self.observer.cap_changed(self.cap)
