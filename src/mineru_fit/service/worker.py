"""The bounded pool: `size` slots, each running one job at a time in its own worker process.

Jobs wait in FIFO order; the pool holds no state a restart needs (the job store does). A slot
starts its process on its first job, keeps it for the next ones, and replaces it after a crash,
a timeout or `jobs_per_runner` jobs.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Awaitable, Callable, Optional

from mineru_fit.service.runner_proc import RunnerProcess

logger = logging.getLogger(__name__)

Execute = Callable[[str, RunnerProcess], Awaitable[None]]


class WorkerPool:
    def __init__(self, size: int, execute: Execute, log_dir: Path, *, jobs_per_runner: int = 200) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one slot")
        self.size = size
        self.execute = execute
        self.log_dir = log_dir
        self.jobs_per_runner = jobs_per_runner
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.pending: list[str] = []                 # waiting job ids, in the order they will run
        self.running: dict[str, int] = {}            # job id -> slot
        self.runners: list[Optional[RunnerProcess]] = [None] * size
        self._tasks: list[asyncio.Task[None]] = []
        self._dropped: set[str] = set()

    @property
    def waiting(self) -> int:
        return len(self.pending)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._slot(n), name=f"mineru-fit-worker-{n}") for n in range(self.size)]

    def submit(self, job_id: str) -> None:
        self._dropped.discard(job_id)
        self.pending.append(job_id)
        self.queue.put_nowait(job_id)

    def drop(self, job_id: str) -> None:
        """A queued job that must not run any more (deleted)."""
        self._dropped.add(job_id)
        if job_id in self.pending:
            self.pending.remove(job_id)

    def position(self, job_id: str) -> Optional[int]:
        """1-based place among the waiting jobs (None: not waiting)."""
        return self.pending.index(job_id) + 1 if job_id in self.pending else None

    def pids(self) -> list[int]:
        return [r.pid for r in self.runners if r is not None and r.alive and r.pid is not None]

    async def _slot(self, n: int) -> None:
        while True:
            job_id = await self.queue.get()
            if job_id in self.pending:
                self.pending.remove(job_id)
            if job_id in self._dropped:
                self._dropped.discard(job_id)
                continue
            # Counted as running from the moment it leaves the queue, so the service never sees a job
            # that is in neither (it admits jobs by that count).
            self.running[job_id] = n
            try:
                runner = self.runners[n]
                if runner is None or not runner.alive or runner.jobs_run >= self.jobs_per_runner:
                    if runner is not None:
                        await runner.stop()
                    runner = self.runners[n] = RunnerProcess(self.log_dir / f"worker-{n}.log")
                await self.execute(job_id, runner)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in the bookkeeping must not stop this slot for good
                logger.exception("job %s: unexpected error in the worker pool", job_id)
            finally:
                self.running.pop(job_id, None)

    async def cancel_running(self, job_id: str) -> bool:
        """Kill the process running `job_id` (its slot moves on to the next job)."""
        slot = self.running.get(job_id)
        if slot is None or self.runners[slot] is None:
            return False
        await self.runners[slot].kill()  # type: ignore[union-attr]
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await asyncio.gather(*(r.stop(grace_s=2.0) for r in self.runners if r is not None), return_exceptions=True)
        self.runners = [None] * self.size
