"""The service core the API and the UI share: accept a job durably, run it in the pool, report on it.

Accepting a job: its files are written and fsynced into a staging folder, checked (type, size,
pages), the folder is renamed into place, and only then is the job's row committed; the caller
answers 200/202 after that. A restart requeues jobs that were running; their page checkpoints
make the rerun cheap. Nothing here knows about HTTP beyond the status a refusal carries.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from mineru_fit.errors import RequestRefusedError
from mineru_fit.service.config import ServiceConfig
from mineru_fit.service.disk import DiskWatch, StoreState, free_bytes, os_reason, probe
from mineru_fit.service.intake import JobRequest, Upload, commit_folder, remove_orphans, store_files
from mineru_fit.service.jobs import Job, JobOptions, JobStatus, Progress
from mineru_fit.service.metrics import ServiceMetrics
from mineru_fit.service.redact import redact_optional, redact_report
from mineru_fit.service.runner import RunRequest
from mineru_fit.service.runner_proc import JobFailed, RunnerCrashed, RunnerProcess
from mineru_fit.service.store import JobStore, StoreError
from mineru_fit.service.worker import WorkerPool

__all__ = ["JobRequest", "ServiceCore", "Upload"]  # the request types live in intake; callers import them here

logger = logging.getLogger(__name__)

STORE_NAME = "jobs.sqlite3"
CRASH_RETRIES = 1            # a job whose worker crashed runs once more on a fresh one
RETENTION_SWEEP_S = 3600.0
_STATUS_OF_REPORT = {"success": JobStatus.succeeded, "partial": JobStatus.partial, "failure": JobStatus.failed}


class ServiceCore:
    """Jobs from submission to result; an async context manager (start/stop) on the server's event loop."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.jobs_dir = config.data_dir / "jobs"
        self.exports_dir = config.data_dir / "exports"
        self.store: Optional[JobStore] = None
        self.pool: Optional[WorkerPool] = None
        self.live: dict[str, Progress] = {}
        self.metrics = ServiceMetrics(self.gauges)
        self._finished: dict[str, asyncio.Event] = {}
        self._crashes: dict[str, int] = {}
        self._deleted: set[str] = set()
        self._admitting = 0               # submissions past the capacity check, still being stored
        self._held: list[str] = []        # queued jobs waiting for the disk to be writable again
        self._unrecorded: dict[str, dict[str, Any]] = {}  # finished jobs whose end the store could not take yet
        self.disk = DiskWatch(self._probe_disk, self._disk_back, retry_s=config.store_retry_s)
        self._job_seconds = 5.0           # a running average, for Retry-After
        self._sweeper: Optional[asyncio.Task[None]] = None
        self.sweepers: list[Callable[[float], None]] = []  # more to clean each retention round (given its cutoff)
        self.closers: list[Callable[[], None]] = []  # what routes beside the core opened (the /v1 store), closed last

    # --- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, drop unaccepted uploads, requeue interrupted jobs and start the workers."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        self.store = store = await asyncio.to_thread(JobStore, self.config.data_dir / STORE_NAME)
        requeued = await asyncio.to_thread(store.requeue_running)
        if requeued:
            logger.warning("resuming %d job(s) interrupted by a restart", len(requeued))
        await asyncio.to_thread(remove_orphans, self.jobs_dir, self.exports_dir, store.ids())
        self.pool = WorkerPool(self.config.workers, self._execute, self.config.data_dir / "logs",
                               jobs_per_runner=self.config.jobs_per_runner)
        self.pool.start()
        for job_id in await asyncio.to_thread(store.queued_ids):
            self.live[job_id] = Progress(0)
            self.pool.submit(job_id)
        if self.config.retention_s > 0:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="mineru-fit-retention")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.disk.stop()
        if self.pool is not None:
            await self.pool.stop()
        if self.store is not None:
            try:
                await asyncio.to_thread(self.store.requeue_running)  # what was cut off runs again next start
            except StoreError as exc:  # the next start requeues them as well
                logger.warning("could not requeue running jobs on the way out: %s", exc)
            self.store.close()
            self.store = None
        for close in self.closers:
            close()

    async def __aenter__(self) -> "ServiceCore":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- state -------------------------------------------------------------------------------
    @property
    def _store(self) -> JobStore:
        if self.store is None:
            raise RuntimeError("the service core is not started")
        return self.store

    def gauges(self) -> dict[str, float]:
        pool = self.pool
        return {"queued": (pool.waiting if pool else 0) + len(self._held), "running": len(pool.running) if pool else 0,
                "workers": self.config.workers, "queue_limit": self.config.max_queue}

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def retry_after_s(self) -> int:
        waiting = self.pool.waiting if self.pool else 0
        return max(1, min(300, math.ceil((waiting + 1) * self._job_seconds / self.config.workers)))

    def jobs_in_service(self) -> int:
        """Jobs running, waiting, or past the capacity check and being stored: what --max-queue bounds."""
        pool = self.pool
        if pool is None:
            return 0
        return pool.waiting + len(pool.running) + self._admitting + len(self._held)

    def check_capacity(self) -> None:
        """503 with Retry-After when the backlog is full (the door's early check; submit() reserves its place)."""
        if not self.disk.writable:
            self.metrics.refused.labels("503").inc()
            raise RequestRefusedError(f"the service cannot write to its disk now ({self.disk.error}) — retry later "
                                      "(Retry-After says when)", status=503, retry_after_s=max(5, self.retry_after_s()))
        limit = self.config.workers + self.config.max_queue
        if self.pool is not None and self.jobs_in_service() >= limit:
            self.metrics.refused.labels("503").inc()
            waiting = max(0, self.jobs_in_service() - self.config.workers)
            raise RequestRefusedError(
                f"{waiting} jobs are waiting for {self.config.workers} workers, the most this service queues "
                f"(--max-queue {self.config.max_queue}) — retry later (Retry-After says when)", status=503,
                retry_after_s=self.retry_after_s())

    def tier_for(self, requested: str) -> tuple[str, str]:
        """The tier a job runs with, decided when it is accepted."""
        engine = self.config.engine
        if requested == "flash":
            return "flash", "asked for: model-free, born-digital PDFs"
        if engine.url is not None:
            return "vlm", f"MinerU2.5 on the {engine.kind} engine" + (f" at level {engine.level}" if engine.level else "")
        if requested == "vlm":
            raise RequestRefusedError(f"the vlm tier is not available here: {engine.reason} — send backend=flash "
                                      "(or pipeline), or start the service with a model or --server URL")
        return "flash", f"auto: {engine.reason}; flash needs no model"

    # --- the disk ----------------------------------------------------------------------------
    def _probe_disk(self) -> Optional[str]:
        return probe(self._store, self.jobs_dir)

    async def _disk_back(self) -> Optional[str]:
        """Writes succeed again: record the endings that waited, then let the held jobs run (or the reason not)."""
        for job_id, ending in list(self._unrecorded.items()):
            try:
                await asyncio.to_thread(self._store.finish, job_id, **ending)
            except StoreError as exc:
                return str(exc)
            self._unrecorded.pop(job_id, None)
        held, self._held = self._held, []
        assert self.pool is not None
        for job_id in held:
            if job_id not in self._deleted:
                self.pool.submit(job_id)
        return None

    async def store_state(self) -> StoreState:
        """The job store's state for /health (probed again when the last look is a few seconds old)."""
        await self.disk.check()
        return StoreState(writable=self.disk.writable, error=self.disk.error,
                          free_bytes=await asyncio.to_thread(free_bytes, self.config.data_dir))

    # --- accepting ---------------------------------------------------------------------------
    async def submit(self, uploads: Sequence[Upload], request: JobRequest) -> Job:
        """Store, check and commit a job; refusals raise RequestRefusedError with their HTTP status."""
        # The check and the reservation happen with no await between them: simultaneous submissions
        # cannot all see the same free place while their uploads are being stored.
        self.check_capacity()
        self._admitting += 1
        try:
            job = await self._accept(uploads, request)
        except RequestRefusedError as exc:
            if exc.status != 503:  # check_capacity counts its own
                self.metrics.refused.labels(str(exc.status)).inc()
            raise
        except (OSError, StoreError) as exc:  # our disk, not the client's request
            self.disk.failed(os_reason(exc))
            self.metrics.refused.labels("503").inc()
            raise RequestRefusedError(f"the service cannot store this upload now: writing to its disk failed "
                                      f"({os_reason(exc)}) — retry later (Retry-After says when)", status=503,
                                      retry_after_s=max(5, self.retry_after_s())) from exc
        finally:
            self._admitting -= 1
        self.metrics.accepted.inc()
        self.live[job.id] = Progress(job.pages_total)
        assert self.pool is not None
        self.pool.submit(job.id)
        return job

    async def _accept(self, uploads: Sequence[Upload], request: JobRequest) -> Job:
        store = self._store
        limits = self.config.limits
        if not uploads:
            raise RequestRefusedError("no file was sent — add one or more PDF, PNG, JPEG or WebP files as `files`")
        if len(uploads) > limits.max_files:
            raise RequestRefusedError(f"{len(uploads)} files in one job; this service takes at most "
                                      f"{limits.max_files} (--max-files) — split the job", status=413)
        tier, reason = self.tier_for(request.tier)
        job_id = uuid.uuid4().hex
        staging = self.jobs_dir / f".incoming-{job_id}"
        final = self.job_dir(job_id)
        try:
            files = await store_files(staging / "inputs", uploads, request.pages, limits)
            total = sum(f.pages for f in files)
            if total > limits.max_pages:
                raise RequestRefusedError(f"{total} pages to parse in one job; this service takes at most "
                                          f"{limits.max_pages} (--max-pages) — send fewer pages or use a page range")
            await asyncio.to_thread(commit_folder, staging, final)
            options = JobOptions(backend=request.backend, tier=tier, tier_reason=reason,
                                 pages=request.pages.text if request.pages else None, return_md=request.return_md,
                                 return_content_list=request.return_content_list,
                                 return_images=request.return_images, zip=request.zip)
            return await asyncio.to_thread(store.add, job_id, options, tuple(files), total)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            try:
                committed = store.get(job_id) is not None
            except StoreError:
                committed = False
            if not committed:  # renamed into place but never committed: not a job
                shutil.rmtree(final, ignore_errors=True)
            raise

    # --- running -----------------------------------------------------------------------------
    def _request(self, job: Job) -> RunRequest:
        engine = self.config.engine
        # All jobs' pages in flight together are what the engine was planned for.
        per_job = max(1, math.ceil((engine.concurrency or self.config.workers) / self.config.workers))
        inputs = tuple(str(self.job_dir(job.id) / "inputs" / f.filename) for f in job.files)
        return RunRequest(job_id=job.id, inputs=inputs, out_dir=str(self.job_dir(job.id) / "output"),
                          tier=job.options.tier, tier_reason=job.options.tier_reason, pages=job.options.pages,
                          server_url=engine.url if job.options.tier == "vlm" else None, concurrency=per_job,
                          max_model_len=engine.max_model_len, model_name=engine.model_name,
                          device_mode=self.config.device_mode)

    async def _execute(self, job_id: str, runner: RunnerProcess) -> None:
        store = self._store
        try:
            if not self.disk.writable:
                raise StoreError(self.disk.error or "not writable")
            job = await asyncio.to_thread(store.get, job_id)
            if job is None or job.status is not JobStatus.queued or job_id in self._deleted:
                return
            if job.options.tier != "vlm" or self.config.engine.url is not None:
                await asyncio.to_thread(store.mark_running, job_id)
        except StoreError as exc:  # nothing was done for it yet: it waits for the disk rather than fail
            if self.disk.writable:
                self.disk.failed(str(exc))
            self._held.append(job_id)
            return
        if job_id in self._deleted:  # deleted while it was being marked
            return
        ended = await self._run(job, runner)
        if ended in (JobStatus.failed, JobStatus.partial) and self.disk.writable:
            await self.disk.check(max_age_s=0)  # it may have met a full disk: the next job must not

    async def _run(self, job: Job, runner: RunnerProcess) -> Optional[JobStatus]:
        """Run a job that is marked running; how it ended (None: it runs again, or was deleted)."""
        job_id = job.id
        progress = self.live[job_id] = Progress(job.pages_total)
        if job.options.tier == "vlm" and self.config.engine.url is None:
            # Accepted while an engine was here; this run of the service has none.
            return await self._finish(job_id, progress, JobStatus.failed, error=(
                f"accepted for the vlm tier, but the service now runs without an engine ({self.config.engine.reason})"
                " — submit it again with backend=flash, or restart the service with its engine"))
        started = time.monotonic()
        try:
            report = await runner.run(self._request(job), lambda event: self._on_event(progress, event),
                                      self.config.job_timeout_s)
        except RunnerCrashed as exc:
            if job_id in self._deleted:
                return None
            self.metrics.worker_restarts.inc()
            crashes = self._crashes[job_id] = self._crashes.get(job_id, 0) + 1
            if crashes <= CRASH_RETRIES:
                logger.warning("job %s: %s; running it again on a fresh worker", job_id, exc)
                try:
                    await asyncio.to_thread(self._store.requeue, job_id)
                except StoreError as store_exc:
                    return await self._finish(job_id, progress, JobStatus.failed, error=str(store_exc))
                assert self.pool is not None
                self.pool.submit(job_id)
                return None
            return await self._finish(job_id, progress, JobStatus.failed,
                                      error=f"{exc} on this job {crashes} times — one of its files crashes the parser")
        except JobFailed as exc:
            return await self._finish(job_id, progress, JobStatus.failed, error=str(exc))
        except asyncio.TimeoutError:
            return await self._finish(job_id, progress, JobStatus.failed,
                                      error=f"stopped after {self.config.job_timeout_s:g} s (the service's --job-timeout)")
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * (time.monotonic() - started)
        status = _STATUS_OF_REPORT.get(str(report.get("status")), JobStatus.failed)
        progress.pages_done = int(report.get("pages_ok", 0)) + int(report.get("pages_failed", 0))
        progress.pages_failed = int(report.get("pages_failed", 0))
        errors = [e for f in report.get("files", []) for e in f.get("errors", [])]
        error = "; ".join(errors[:5]) if status is JobStatus.failed and errors else None
        return await self._finish(job_id, progress, status, report=report, error=error)

    def _on_event(self, progress: Progress, event: dict[str, Any]) -> None:
        page_ok = progress.apply(event)
        if page_ok is not None:
            self.metrics.page(page_ok)

    async def _finish(self, job_id: str, progress: Progress, status: JobStatus, *,
                      report: Optional[dict[str, Any]] = None, error: Optional[str] = None) -> Optional[JobStatus]:
        """Record how a job ended (the status it ended with; None when it was deleted)."""
        if job_id in self._deleted:
            return None
        ending = {"status": status, "pages_done": progress.pages_done, "pages_failed": progress.pages_failed,
                  "report": redact_report(report) if report is not None else None, "error": redact_optional(error)}
        try:
            await asyncio.to_thread(self._store.finish, job_id, **ending)
        except StoreError as exc:
            # The store cannot take its end: the job fails with that reason now (its waiter hears it), and the
            # failure is written once the disk can be written again.
            self.disk.failed(str(exc))
            status = JobStatus.failed
            self._unrecorded[job_id] = {**ending, "status": status, "report": None, "error": (
                f"its result could not be recorded: writing to the service's disk failed ({exc}) — "
                "submit it again once /health says the store is writable")}
        self.metrics.jobs.labels(status.value).inc()
        self._crashes.pop(job_id, None)
        self.live.pop(job_id, None)
        event = self._finished.pop(job_id, None)
        if event is not None:
            event.set()
        return status

    # --- reading -----------------------------------------------------------------------------
    async def get(self, job_id: str) -> Optional[Job]:
        """The job with live progress folded in (None: no such job)."""
        if not _is_job_id(job_id):
            return None
        job = await asyncio.to_thread(self._store.get, job_id)
        live = self.live.get(job_id)
        ending = self._unrecorded.get(job_id)
        if job is not None and ending is not None:  # ended while the store could not take it
            job = replace(job, finished_at=job.finished_at or time.time(), **ending)
        elif job is not None and live is not None and not job.status.finished:
            job = replace(job, pages_done=live.pages_done, pages_failed=live.pages_failed)
        return job


    def current(self, job_id: str) -> str:
        if job_id in self._held:
            return f"waiting: the service cannot write to its disk ({self.disk.error}); it runs once it can"
        live = self.live.get(job_id)
        return live.current if live else ""

    def queue_position(self, job_id: str) -> Optional[int]:
        """1-based place among waiting jobs (None when not waiting)."""
        return self.pool.position(job_id) if self.pool is not None else None

    async def wait(self, job_id: str, timeout_s: Optional[float] = None) -> Optional[Job]:
        """The job once finished (or as it is when `timeout_s` runs out; None when deleted)."""
        event = self._finished.setdefault(job_id, asyncio.Event())
        job = await self.get(job_id)
        if job is None or job.status.finished:
            self._finished.pop(job_id, None)
            return job
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        return await self.get(job_id)

    # --- removing ----------------------------------------------------------------------------
    async def delete(self, job_id: str) -> bool:
        """Remove a job, its files and outputs; a running job's worker is stopped first."""
        job = await self.get(job_id)
        if job is None:
            return False
        self._deleted.add(job_id)
        assert self.pool is not None
        if job_id in self._held:
            self._held.remove(job_id)
        self._unrecorded.pop(job_id, None)
        if job.status is JobStatus.queued:
            self.pool.drop(job_id)
        elif job.status is JobStatus.running:
            await self.pool.cancel_running(job_id)
        await asyncio.to_thread(self._store.delete, job_id)
        await asyncio.to_thread(shutil.rmtree, self.job_dir(job_id), True)
        (self.exports_dir / f"{job_id}.zip").unlink(missing_ok=True)  # the UI's download
        self.live.pop(job_id, None)
        event = self._finished.pop(job_id, None)
        if event is not None:
            event.set()
        return True

    async def _sweep_forever(self) -> None:
        while True:
            cutoff = time.time() - self.config.retention_s
            try:
                for job_id in await asyncio.to_thread(self._store.finished_before, cutoff):
                    await self.delete(job_id)
            except StoreError as exc:  # a failing disk: the next sweep tries again
                logger.warning("retention sweep skipped: %s", exc)
            for sweep in self.sweepers:
                await asyncio.to_thread(sweep, cutoff)
            await asyncio.sleep(RETENTION_SWEEP_S)


def _is_job_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)
