"""What the core's retention round also removes for /v1: uploaded bytes no live file names, zips and rows of
jobs the core has deleted, files past their expiry, and staged bytes of uploads that will never complete."""

from __future__ import annotations

import logging
import shutil
import time
from typing import Callable, Optional

from mineru_fit.service.v1.jobs import iso
from mineru_fit.service.v1.store import V1Store

logger = logging.getLogger(__name__)

# A blob younger than this stays even when no file names it yet: an upload completing right now
# stores its blob a moment before its file row (and a reused blob is touched first).
BLOB_GRACE_S = 600


def sweep(store: V1Store, core_jobs: Callable[[], set[str]], cutoff: float, now: Optional[float] = None) -> None:
    """One round; `core_jobs` lists the jobs the core still holds, `cutoff` is its retention horizon."""
    try:
        _sweep(store, core_jobs, cutoff, int(time.time() if now is None else now))
    except Exception:  # a failed round must not end the core's sweeper; the next round tries again
        logger.exception("the /v1 retention round failed")


def _sweep(store: V1Store, core_jobs: Callable[[], set[str]], cutoff: float, now: int) -> None:
    # Read our side first: a job (and then its zip) is added here only after the core committed it,
    # so anything listed before the core's ids that the core lacks is really gone.
    ours, folders = store.job_ids(), list(store.outputs.iterdir())
    known = core_jobs()
    store.forget([j for j in ours if j not in known], now, iso(cutoff) or "")
    for folder in folders:
        if folder.name not in known:
            shutil.rmtree(folder, ignore_errors=True)
    for staged in store.incoming.iterdir():
        upload = store.upload(staged.name)
        if upload is None or upload["status"] != "pending" or upload["expires_at"] <= now:
            staged.unlink(missing_ok=True)
    live = store.live_hashes()
    for blob in store.blobs.glob("*/*"):
        if blob.parent.name + blob.name not in live and blob.stat().st_mtime < now - BLOB_GRACE_S:
            blob.unlink(missing_ok=True)
