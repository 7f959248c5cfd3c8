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
import os
import shutil
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional, Sequence

from mineru_fit.errors import RequestRefusedError
from mineru_fit.parsing import PageSelection
from mineru_fit.service.config import ServiceConfig
from mineru_fit.service.files import ByteBudget, fsync_dir, inspect_upload, safe_filename, save_stream
from mineru_fit.service.jobs import Job, JobFile, JobOptions, JobStatus, Progress
from mineru_fit.service.metrics import ServiceMetrics
from mineru_fit.service.runner import RunRequest
from mineru_fit.service.runner_proc import JobFailed, RunnerCrashed, RunnerProcess
from mineru_fit.service.store import JobStore
from mineru_fit.service.worker import WorkerPool

logger = logging.getLogger(__name__)

CRASH_RETRIES = 1            # a job whose worker crashed runs once more on a fresh one
RETENTION_SWEEP_S = 3600.0
_STATUS_OF_REPORT = {"success": JobStatus.succeeded, "partial": JobStatus.partial, "failure": JobStatus.failed}


@dataclass(frozen=True)
class Upload:
    """One file of a submission: the client's name (a label only) and its bytes."""

    name: Optional[str]
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class JobRequest:
    """What a submission asks for, already validated (see mineru_form)."""

    tier: str = "auto"                    # auto | vlm | flash
    backend: str = "auto"                 # the client's name for it, echoed back
    pages: Optional[PageSelection] = None
    return_md: bool = True
    return_content_list: bool = False
    return_images: bool = False
    zip: bool = False


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
        self._job_seconds = 5.0           # a running average, for Retry-After
        self._sweeper: Optional[asyncio.Task[None]] = None
        self.sweepers: list[Callable[[float], None]] = []  # more to clean each retention round (given its cutoff)

    # --- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, drop unaccepted uploads, requeue interrupted jobs and start the workers."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        self.store = store = await asyncio.to_thread(JobStore, self.config.data_dir / "jobs.sqlite3")
        requeued = await asyncio.to_thread(store.requeue_running)
        if requeued:
            logger.warning("resuming %d job(s) interrupted by a restart", len(requeued))
        await asyncio.to_thread(self._remove_orphans, store.ids())
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
        if self.pool is not None:
            await self.pool.stop()
        if self.store is not None:
            await asyncio.to_thread(self.store.requeue_running)  # what was cut off runs again next start
            self.store.close()
            self.store = None

    async def __aenter__(self) -> "ServiceCore":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _remove_orphans(self, known: set[str]) -> None:
        for entry in self.jobs_dir.iterdir():
            if entry.name not in known:  # staging folders and folders whose row was never committed
                shutil.rmtree(entry, ignore_errors=True)
        for entry in self.exports_dir.iterdir():
            entry.unlink(missing_ok=True)

    # --- state -------------------------------------------------------------------------------
    @property
    def _store(self) -> JobStore:
        if self.store is None:
            raise RuntimeError("the service core is not started")
        return self.store

    def gauges(self) -> dict[str, float]:
        pool = self.pool
        return {"queued": pool.waiting if pool else 0, "running": len(pool.running) if pool else 0,
                "workers": self.config.workers, "queue_limit": self.config.max_queue}

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def retry_after_s(self) -> int:
        waiting = self.pool.waiting if self.pool else 0
        return max(1, min(300, math.ceil((waiting + 1) * self._job_seconds / self.config.workers)))

    def check_capacity(self) -> None:
        """503 with Retry-After when the backlog is full (called before any byte is read, and again on accept)."""
        if self.pool is not None and self.pool.waiting >= self.config.max_queue:
            self.metrics.refused.labels("503").inc()
            raise RequestRefusedError(
                f"{self.pool.waiting} jobs are waiting for {self.config.workers} workers, the most this service queues "
                "— retry later (Retry-After says when)", status=503, retry_after_s=self.retry_after_s())

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

    # --- accepting ---------------------------------------------------------------------------
    async def submit(self, uploads: Sequence[Upload], request: JobRequest) -> Job:
        """Store, check and commit a job; refusals raise RequestRefusedError with their HTTP status."""
        try:
            job = await self._accept(uploads, request)
        except RequestRefusedError as exc:
            if exc.status != 503:  # check_capacity counts its own
                self.metrics.refused.labels(str(exc.status)).inc()
            raise
        self.metrics.accepted.inc()
        self.live[job.id] = Progress(job.pages_total)
        assert self.pool is not None
        self.pool.submit(job.id)
        return job

    async def _accept(self, uploads: Sequence[Upload], request: JobRequest) -> Job:
        store = self._store
        self.check_capacity()
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
            files = await self._store_files(staging / "inputs", uploads, request.pages)
            total = sum(f.pages for f in files)
            if total > limits.max_pages:
                raise RequestRefusedError(f"{total} pages to parse in one job; this service takes at most "
                                          f"{limits.max_pages} (--max-pages) — send fewer pages or use a page range")
            self.check_capacity()
            await asyncio.to_thread(_commit_folder, staging, final)
            options = JobOptions(backend=request.backend, tier=tier, tier_reason=reason,
                                 pages=request.pages.text if request.pages else None, return_md=request.return_md,
                                 return_content_list=request.return_content_list,
                                 return_images=request.return_images, zip=request.zip)
            return await asyncio.to_thread(store.add, job_id, options, tuple(files), total)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if store.get(job_id) is None:  # renamed into place but never committed: not a job
                shutil.rmtree(final, ignore_errors=True)
            raise

    async def _store_files(self, inputs: Path, uploads: Sequence[Upload],
                           pages: Optional[PageSelection]) -> list[JobFile]:
        inputs.mkdir(parents=True)
        budget = ByteBudget(self.config.limits.max_upload_bytes)
        used: set[str] = set()
        files: list[JobFile] = []
        for upload in uploads:
            filename = safe_filename(upload.name, used)
            shown = (upload.name or filename)[:200]
            size = await save_stream(upload.chunks, inputs / filename, budget)
            kind, count = await asyncio.to_thread(inspect_upload, inputs / filename, shown, pages)
            files.append(JobFile(name=Path(filename).stem, filename=filename, original=shown, size_bytes=size,
                                 kind=kind, pages=count))
        return files

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
        job = await asyncio.to_thread(store.get, job_id)
        if job is None or job.status is not JobStatus.queued or job_id in self._deleted:
            return
        progress = self.live[job_id] = Progress(job.pages_total)
        if job.options.tier == "vlm" and self.config.engine.url is None:
            # Accepted while an engine was here; this run of the service has none.
            await self._finish(job_id, progress, JobStatus.failed, error=(
                f"accepted for the vlm tier, but the service now runs without an engine ({self.config.engine.reason})"
                " — submit it again with backend=flash, or restart the service with its engine"))
            return
        await asyncio.to_thread(store.mark_running, job_id)
        started = time.monotonic()
        try:
            report = await runner.run(self._request(job), lambda event: self._on_event(progress, event),
                                      self.config.job_timeout_s)
        except RunnerCrashed as exc:
            if job_id in self._deleted:
                return
            self.metrics.worker_restarts.inc()
            crashes = self._crashes[job_id] = self._crashes.get(job_id, 0) + 1
            if crashes <= CRASH_RETRIES:
                logger.warning("job %s: %s; running it again on a fresh worker", job_id, exc)
                await asyncio.to_thread(store.requeue, job_id)
                assert self.pool is not None
                self.pool.submit(job_id)
                return
            await self._finish(job_id, progress, JobStatus.failed,
                               error=f"{exc} on this job {crashes} times — one of its files crashes the parser")
        except JobFailed as exc:
            await self._finish(job_id, progress, JobStatus.failed, error=str(exc))
        except asyncio.TimeoutError:
            await self._finish(job_id, progress, JobStatus.failed,
                               error=f"stopped after {self.config.job_timeout_s:g} s (the service's --job-timeout)")
        else:
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * (time.monotonic() - started)
            status = _STATUS_OF_REPORT.get(str(report.get("status")), JobStatus.failed)
            progress.pages_done = int(report.get("pages_ok", 0)) + int(report.get("pages_failed", 0))
            progress.pages_failed = int(report.get("pages_failed", 0))
            errors = [e for f in report.get("files", []) for e in f.get("errors", [])]
            error = "; ".join(errors[:5]) if status is JobStatus.failed and errors else None
            await self._finish(job_id, progress, status, report=report, error=error)

    def _on_event(self, progress: Progress, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "file":
            resumed = int(event.get("resumed", 0))
            progress.files[str(event.get("name"))] = resumed
            progress.pages_done += resumed
        elif kind == "page":
            ok = bool(event.get("ok"))
            progress.pages_done += 1
            progress.pages_failed += 0 if ok else 1
            name = str(event.get("name"))
            progress.files[name] = progress.files.get(name, 0) + 1
            self.metrics.page(ok)
        elif kind == "status":
            progress.current = str(event.get("text", ""))

    async def _finish(self, job_id: str, progress: Progress, status: JobStatus, *,
                      report: Optional[dict[str, Any]] = None, error: Optional[str] = None) -> None:
        if job_id in self._deleted:
            return
        await asyncio.to_thread(self._store.finish, job_id, status, pages_done=progress.pages_done,
                                pages_failed=progress.pages_failed, report=report, error=error)
        self.metrics.jobs.labels(status.value).inc()
        self._crashes.pop(job_id, None)
        self.live.pop(job_id, None)
        event = self._finished.pop(job_id, None)
        if event is not None:
            event.set()

    # --- reading -----------------------------------------------------------------------------
    async def get(self, job_id: str) -> Optional[Job]:
        """The job with live progress folded in (None: no such job)."""
        if not _is_job_id(job_id):
            return None
        job = await asyncio.to_thread(self._store.get, job_id)
        live = self.live.get(job_id)
        if job is not None and live is not None and not job.status.finished:
            job = replace(job, pages_done=live.pages_done, pages_failed=live.pages_failed)
        return job

    def current(self, job_id: str) -> str:
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
            for job_id in await asyncio.to_thread(self._store.finished_before, cutoff):
                await self.delete(job_id)
            for sweep in self.sweepers:
                await asyncio.to_thread(sweep, cutoff)
            await asyncio.sleep(RETENTION_SWEEP_S)


def _is_job_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _commit_folder(staging: Path, final: Path) -> None:
    """fsync the uploads' folder entries, then rename it into place and fsync that."""
    for folder in (staging / "inputs", staging):
        fsync_dir(folder)
    os.rename(staging, final)
    fsync_dir(final.parent)
