"""The job store: one SQLite database (WAL, synchronous=FULL) beside the jobs' folders.

A row exists only for a job whose files are already on disk and fsynced, so a committed row is
a job that can always be run; a folder without a row is an upload that was never accepted.
Every method is short and thread-safe (one connection behind a lock): callers on an event loop
run them in a thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Optional

from mineru_fit.errors import MineruFitError
from mineru_fit.service.jobs import Job, JobFile, JobOptions, JobStatus

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    status        TEXT NOT NULL,
    options       TEXT NOT NULL,
    files         TEXT NOT NULL,
    pages_total   INTEGER NOT NULL,
    pages_done    INTEGER NOT NULL DEFAULT 0,
    pages_failed  INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    error         TEXT,
    report        TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""
_COLUMNS = ("id", "status", "options", "files", "pages_total", "pages_done", "pages_failed", "attempts",
            "created_at", "started_at", "finished_at", "error", "report")


class StoreError(MineruFitError):
    """The job store could not be read or written (a full, read-only or failing disk); the message is the
    database's own reason, with no path in it."""


class JobStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we open transactions ourselves, so each write is one commit.
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(_reason(exc)) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an accepted job survives a power cut, not just kill -9
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise RuntimeError(f"{path} was written by another mineru-fit (schema {version}) — use another --data-dir")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(_reason(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: Iterable[Any] = ()) -> int:
        """One statement in one transaction; StoreError with the database's reason when it cannot be written."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    cursor = self._db.execute(sql, tuple(args))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                return cursor.rowcount
            except sqlite3.Error as exc:
                raise StoreError(_reason(exc)) from exc

    def _rollback(self) -> None:
        # After a full disk or an I/O error SQLite may have rolled the transaction back itself: a second
        # ROLLBACK would raise "no transaction is active" and hide the error that matters.
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            logger.warning("job store: rollback failed too (%s); the first error follows", exc)

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(_reason(exc)) from exc

    def probe(self) -> None:
        """One real write (StoreError when it fails): whether the store can record anything now."""
        self._write("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),))

    # --- writes ------------------------------------------------------------------------------
    def add(self, job_id: str, options: JobOptions, files: tuple[JobFile, ...], pages_total: int) -> Job:
        """Commit a new queued job (its files must already be on disk and fsynced)."""
        now = time.time()
        self._write(
            "INSERT INTO jobs (id, status, options, files, pages_total, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, JobStatus.queued.value, options.to_json(), json.dumps([asdict(f) for f in files]),
             pages_total, now),
        )
        return Job(job_id, JobStatus.queued, options, files, pages_total, now)

    def mark_running(self, job_id: str) -> None:
        self._write("UPDATE jobs SET status=?, started_at=?, attempts=attempts+1 WHERE id=?",
                    (JobStatus.running.value, time.time(), job_id))

    def requeue(self, job_id: str) -> None:
        self._write("UPDATE jobs SET status=? WHERE id=?", (JobStatus.queued.value, job_id))

    def finish(self, job_id: str, status: JobStatus, *, pages_done: int, pages_failed: int,
               report: Optional[dict[str, Any]] = None, error: Optional[str] = None) -> None:
        self._write(
            "UPDATE jobs SET status=?, finished_at=?, pages_done=?, pages_failed=?, report=?, error=? WHERE id=?",
            (status.value, time.time(), pages_done, pages_failed,
             json.dumps(report) if report is not None else None, error, job_id),
        )

    def requeue_running(self) -> list[str]:
        """After a restart: jobs that were running when the process died go back to the queue."""
        ids = [r[0] for r in self._rows("SELECT id FROM jobs WHERE status=? ORDER BY seq", (JobStatus.running.value,))]
        if ids:
            self._write("UPDATE jobs SET status=? WHERE status=?", (JobStatus.queued.value, JobStatus.running.value))
        return ids

    def delete(self, job_id: str) -> bool:
        return self._write("DELETE FROM jobs WHERE id=?", (job_id,)) > 0

    # --- reads -------------------------------------------------------------------------------
    def get(self, job_id: str) -> Optional[Job]:
        rows = self._rows(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id=?", (job_id,))
        return _job(rows[0]) if rows else None

    def queued_ids(self) -> list[str]:
        """Queued jobs, oldest first: the order they run in."""
        return [r[0] for r in self._rows("SELECT id FROM jobs WHERE status=? ORDER BY seq", (JobStatus.queued.value,))]

    def ids(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT id FROM jobs")}

    def finished_before(self, cutoff: float) -> list[str]:
        finished = [s.value for s in JobStatus if s.finished]
        marks = ", ".join("?" * len(finished))
        return [r[0] for r in self._rows(
            f"SELECT id FROM jobs WHERE status IN ({marks}) AND finished_at < ? ORDER BY seq", (*finished, cutoff))]

    def counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobStatus}
        counts.update({status: n for status, n in self._rows("SELECT status, COUNT(*) FROM jobs GROUP BY status")})
        return counts


def _reason(exc: BaseException) -> str:
    """The database's or the OS's words for what failed, without the file's path."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _job(row: tuple[Any, ...]) -> Job:
    data = dict(zip(_COLUMNS, row))
    return Job(
        id=data["id"], status=JobStatus(data["status"]), options=JobOptions.from_json(data["options"]),
        files=tuple(JobFile.from_dict(f) for f in json.loads(data["files"])), pages_total=data["pages_total"],
        created_at=data["created_at"], started_at=data["started_at"], finished_at=data["finished_at"],
        attempts=data["attempts"], pages_done=data["pages_done"], pages_failed=data["pages_failed"],
        error=data["error"], report=json.loads(data["report"]) if data["report"] else None,
    )
