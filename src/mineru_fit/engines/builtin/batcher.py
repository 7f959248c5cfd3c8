"""Continuous batching with out-of-memory recovery; knows nothing of torch or HTTP.

Requests wait in arrival order. Between decode steps the worker thread drops cancelled requests,
lets finished rows leave, and admits waiting requests (each prefilled alone, then decoding with
the rest) while the rows in flight stay within the batch cap and their tokens (prompt + output
cap of every row) within the KV budget — the plan's batch × context. A request that does not fit
waits for rows to leave; the queue is never reordered, so nothing starves. Rows sample each their
own way, so any requests can share a step.

On out-of-memory: a request that fails to join rows in flight waits until they leave, and the cap
drops to what was running (it rises again by one after a run of good joins); rows that fail a
decode step are halved — the newer half goes back to the front of the queue and starts again. A
request that fails alone is retried once with its images at half their pixels, else answered 503.
Every request gets an answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Callable, Optional, Protocol

from mineru_fit.engines.builtin.jobs import CANCELLED_STATUS, Job, Outcome

logger = logging.getLogger(__name__)

# Good joins at the lowered cap before trying one more row in flight.
RECOVER_AFTER_BATCHES = 8


class Rows(Protocol):
    """The model side (generation.Generator): rows in flight, stepped together."""

    def running(self) -> list[Job]: ...
    def prefill(self, job: Job) -> Optional[Outcome]: ...
    def step(self) -> list[tuple[Job, Outcome]]: ...
    def drop(self, job: Job) -> Outcome: ...
    def drop_all(self) -> list[Job]: ...


class BatchObserver:
    """What the batcher reports; the server's metrics implement it."""

    def queued(self, waiting: int) -> None: ...
    def batch_started(self, size: int, tokens: int) -> None: ...   # the rows in flight changed
    def generated(self, tokens: int, seconds: float) -> None: ...  # a prefill or a step produced tokens
    def batch_finished(self, size: int, outcomes: list[Outcome], seconds: float) -> None: ...
    def oom(self, action: str) -> None: ...
    def cap_changed(self, cap: int) -> None: ...


class Waiting:
    """A request and the future its HTTP handler awaits."""

    def __init__(self, job: Job, future: "asyncio.Future[Outcome]", loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.future = future
        self.loop = loop
        self.started = time.perf_counter()

    def answer(self, outcome: Outcome) -> None:
        def settle() -> None:
            if not self.future.done():
                self.future.set_result(outcome)
        self.loop.call_soon_threadsafe(settle)


class Batcher:
    def __init__(
        self,
        rows: Rows,
        *,
        max_batch: int,
        kv_budget_tokens: Optional[int] = None,
        wait_s: float = 0.0,
        is_oom: Callable[[BaseException], bool],
        release: Callable[[], None] = lambda: None,
        shrink: Optional[Callable[[Job], Job]] = None,
        observer: Optional[BatchObserver] = None,
    ) -> None:
        self.rows = rows
        self.max_batch = max(1, max_batch)
        self.cap = self.max_batch
        self.kv_budget_tokens = kv_budget_tokens
        self.wait_s = wait_s      # an idle engine waits this long for company before its first prefill
        self.is_oom = is_oom
        self.release = release
        self.shrink = shrink
        self.observer = observer or BatchObserver()
        self._successes = 0
        self._waiting: "deque[Waiting]" = deque()
        self._flight: dict[int, Waiting] = {}   # id(job) -> its waiter, for the rows in flight
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mineru-fit-generate", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        for waiter in list(self._waiting) + list(self._flight.values()):
            waiter.answer(Outcome(error_status=503, error_message="the server is shutting down — retry"))
        self._waiting.clear()
        self._flight.clear()

    async def submit(self, job: Job) -> Outcome:
        loop = asyncio.get_running_loop()
        waiter = Waiting(job, loop.create_future(), loop)
        with self._wake:
            self._waiting.append(waiter)
            self.observer.queued(len(self._waiting))
            self._wake.notify_all()
        return await waiter.future

    # The worker thread.
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._waiting and not self._flight:
                    self._wake.wait()
                if self._stopping:
                    return
                if not self._flight and self.wait_s > 0:
                    # Idle until now: give requests sent together the chance to start together.
                    deadline = time.monotonic() + self.wait_s
                    while len(self._waiting) < self.cap and not self._stopping:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._wake.wait(left)
            try:
                self._cancel()
                self._admit()
                self._step()
            except Exception:  # never lose a request, whatever broke
                logger.exception("generation failed")
                for job in self.rows.drop_all():
                    self._answer(job, Outcome(error_status=500, error_message="generation failed"))

    def _answer(self, job: Job, outcome: Outcome) -> None:
        waiter = self._flight.pop(id(job), None)
        if waiter is not None:
            waiter.answer(outcome)

    def _in_flight_tokens(self) -> int:
        return sum(j.prompt_tokens + j.max_new_tokens for j in self.rows.running())

    def _report_rows(self) -> None:
        self.observer.batch_started(len(self._flight), self._in_flight_tokens())

    def _cancel(self) -> None:
        """Answer cancelled requests, waiting or in flight, and free what they held."""
        with self._wake:
            gone = [w for w in self._waiting if w.job.cancelled]
            for waiter in gone:
                self._waiting.remove(waiter)
        for waiter in gone:
            waiter.answer(Outcome(error_status=CANCELLED_STATUS, error_message="cancelled by the client"))
        dropped = [job for job in self.rows.running() if job.cancelled]
        for job in dropped:
            partial = self.rows.drop(job)
            self._answer(job, Outcome(error_status=CANCELLED_STATUS, error_message="cancelled by the client",
                                      prompt_tokens=partial.prompt_tokens,
                                      completion_tokens=partial.completion_tokens))
        if gone or dropped:
            self.observer.queued(len(self._waiting))
            self._report_rows()

    def _fits(self, job: Job) -> bool:
        if len(self._flight) >= self.cap:
            return False
        if self.kv_budget_tokens is None or not self._flight:
            return True  # alone, a request always fits: the token budget clamped it to the context
        return self._in_flight_tokens() + job.prompt_tokens + job.max_new_tokens <= self.kv_budget_tokens

    def _admit(self) -> None:
        while True:
            with self._wake:
                if not self._waiting or not self._fits(self._waiting[0].job):
                    return
                waiter = self._waiting.popleft()
                self.observer.queued(len(self._waiting))
            self._join(waiter)

    def _join(self, waiter: Waiting) -> None:
        job = waiter.job
        alone = not self._flight
        start = time.perf_counter()
        try:
            done = self.rows.prefill(job)
        except Exception as exc:
            if not self.is_oom(exc):
                logger.exception("prefill failed")
                waiter.answer(Outcome(error_status=500, error_message=f"generation failed: {exc}"))
                return
            self.release()
            self._after_join_oom(waiter, alone, exc)
            return
        self.observer.generated(1, time.perf_counter() - start)
        self._succeeded()
        if done is not None:
            waiter.answer(done)
            self.observer.batch_finished(1, [done], time.perf_counter() - waiter.started)
            return
        self._flight[id(job)] = waiter
        self._report_rows()

    def _after_join_oom(self, waiter: Waiting, alone: bool, exc: BaseException) -> None:
        if not alone:
            # Room for this request comes back when rows leave: it waits at the head of the queue.
            self.observer.oom("split")
            logger.warning("out of memory adding a request to %d in flight: it waits for room", len(self._flight))
            self._lower_cap(len(self._flight))
            with self._wake:
                self._waiting.appendleft(waiter)
            return
        job = waiter.job
        if self.shrink is not None and job.images and not job.shrunk:
            self.observer.oom("shrink")
            logger.warning("out of memory on one request: retrying with images at half their pixels")
            waiter.job = self.shrink(job)
            with self._wake:
                self._waiting.appendleft(waiter)
            return
        self.observer.oom("rejected")
        waiter.answer(Outcome(
            error_status=503,
            error_message=f"out of GPU memory even for this request alone ({exc}) — retry later, send a smaller "
                          "image, or restart the server at a more aggressive --level",
        ))

    def _step(self) -> None:
        if not self._flight:
            return
        start = time.perf_counter()
        size = len(self._flight)
        try:
            finished = self.rows.step()
        except Exception as exc:
            if not self.is_oom(exc):
                raise
            self.release()
            self._after_step_oom(exc)
            return
        now = time.perf_counter()
        self.observer.generated(size, now - start)
        for job, outcome in finished:
            waiter = self._flight.get(id(job))
            self._answer(job, outcome)
            self.observer.batch_finished(1, [outcome], now - (waiter.started if waiter else start))
        if finished:
            self._report_rows()

    def _after_step_oom(self, exc: BaseException) -> None:
        running = self.rows.running()
        if len(running) == 1:
            job = running[0]
            waiter = self._flight.pop(id(job))
            self.rows.drop(job)
            self._after_join_oom(waiter, True, exc)
            self._report_rows()
            return
        # The newer half goes back to the front of the queue (in arrival order) and starts over.
        self.observer.oom("split")
        keep = len(running) // 2
        logger.warning("out of memory stepping %d rows: %d go back to the queue", len(running), len(running) - keep)
        self._lower_cap(keep)
        back = []
        for job in running[keep:]:
            self.rows.drop(job)
            back.append(self._flight.pop(id(job)))
        with self._wake:
            self._waiting.extendleft(reversed(back))
            self.observer.queued(len(self._waiting))
        self._report_rows()

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
