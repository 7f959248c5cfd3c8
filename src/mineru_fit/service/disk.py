"""Whether the service can write its data dir: a probe that really writes, what to do while it cannot, and the
start-up check.

A full, read-only or failing disk is a state of the service, not an error of one request: while it lasts
the jobs that have not started wait (they would only fail), new submissions are refused with 503 and
Retry-After, /health says degraded, and a probe every few seconds notices when writes succeed again —
then the waiting jobs resume, with no restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Optional

from mineru_fit.errors import MineruFitError
from mineru_fit.service.store import JobStore, StoreError

logger = logging.getLogger(__name__)

PROBE_BYTES = 64 * 1024       # a write the size of a small upload chunk, fsynced: a full disk cannot fake it
RECHECK_S = 5.0               # /health probes again when its last look is older than this
RETRY_S = 2.0                 # while the disk fails: how often to try again


class DataDirError(MineruFitError):
    """The data dir cannot hold jobs (at start-up): one line naming it, the reason and what to do."""


@dataclass(frozen=True)
class StoreState:
    """The store as /health reports it."""

    writable: bool
    error: Optional[str]          # why it cannot be written (None: it can)
    free_bytes: Optional[int]     # free space on the data dir's file system (None: unknown)


def os_reason(exc: BaseException) -> str:
    """The OS's words for a failed file operation, without the path (which clients must not see)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def write_probe(folder: Path) -> None:
    """Create, write, fsync and remove a file in `folder` (OSError when any step fails)."""
    fd, name = tempfile.mkstemp(prefix=".probe-", dir=folder)
    try:
        os.write(fd, b"\0" * PROBE_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def probe(store: JobStore, folder: Path) -> Optional[str]:
    """None when both a file in `folder` and the store can be written now, else the reason."""
    try:
        write_probe(folder)
        store.probe()
    except OSError as exc:
        return os_reason(exc)
    except StoreError as exc:
        return str(exc)
    return None


def free_bytes(folder: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_data_dir(data_dir: Path, store_name: str) -> None:
    """DataDirError unless `data_dir` can hold jobs: checked before the engine loads (minutes) or a port opens."""
    store: Optional[JobStore] = None
    try:
        jobs = data_dir / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        store = JobStore(data_dir / store_name)
        reason = probe(store, jobs)
    except (OSError, StoreError) as exc:
        reason = os_reason(exc)
    finally:
        if store is not None:
            store.close()
    if reason is not None:
        raise DataDirError(f"cannot use the data dir {data_dir}: {reason} — free space there, make it writable, "
                           "or pick another --data-dir")


class DiskWatch:
    """The store's health on the event loop: `failed()` when a write fails, a retry loop until `probe` passes,
    then `on_writable()` (which may report a new failure as a reason)."""

    def __init__(self, probe: Callable[[], Optional[str]], on_writable: Callable[[], Awaitable[Optional[str]]],
                 retry_s: float = RETRY_S) -> None:
        self._probe = probe
        self._on_writable = on_writable
        self.retry_s = retry_s
        self.error: Optional[str] = None
        self._checked = 0.0
        self._retrying: Optional[asyncio.Task[None]] = None

    @property
    def writable(self) -> bool:
        return self.error is None

    def failed(self, reason: str) -> None:
        """A write failed: hold new work until a probe passes."""
        if self.error is None:
            logger.error("the job store cannot be written (%s): jobs wait and submissions are refused until it can",
                         reason)
        self.error = reason
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry(), name="mineru-fit-disk-retry")

    async def check(self, *, max_age_s: float = RECHECK_S) -> bool:
        """Probe now (unless the last look is fresher than `max_age_s`); whether the store is writable."""
        if time.monotonic() - self._checked < max_age_s:
            return self.writable
        self._checked = time.monotonic()
        reason = await asyncio.to_thread(self._probe)
        if reason is None and self.error is not None:
            reason = await self._on_writable()
            if reason is None:
                logger.warning("the job store can be written again: waiting jobs resume")
                self.error = None
        if reason is not None:
            self.failed(reason)
        return self.writable

    async def _retry(self) -> None:
        while self.error is not None:
            await asyncio.sleep(self.retry_s)
            await self.check(max_age_s=0)

    async def stop(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            await asyncio.gather(self._retrying, return_exceptions=True)
