"""What /v1 keeps beside the shared job store: uploads, file objects, and each job's /v1 options.

One SQLite database (WAL, synchronous=FULL) under `<data dir>/v1/`, with uploaded bytes stored by
their SHA-256 (an identical upload is not kept twice, and a declared hash that is already here
completes the upload at once, as MinerU 4 does). Jobs themselves live in the shared store; a
row here only adds what MinerU 4's payload names (tier, output formats, per-file names).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from mineru_fit.service.files import fsync_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY, filename TEXT NOT NULL, bytes INTEGER NOT NULL, mime_type TEXT NOT NULL,
    purpose TEXT NOT NULL, sha256 TEXT, status TEXT NOT NULL, created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, file_id TEXT
);
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, filename TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, purpose TEXT NOT NULL,
    sha256 TEXT, path TEXT, job_id TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, tier TEXT NOT NULL, output_formats TEXT NOT NULL, ocr_mode TEXT NOT NULL,
    files TEXT NOT NULL, canceled TEXT, outputs TEXT, counted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS usage (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_FILE_COLUMNS = ("id", "filename", "bytes", "created_at", "expires_at", "purpose", "sha256", "path", "job_id")
_UPLOAD_COLUMNS = ("id", "filename", "bytes", "mime_type", "purpose", "sha256", "status", "created_at",
                   "expires_at", "file_id")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


class V1Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.incoming = root / "incoming"
        self.outputs = root / "outputs"
        for folder in (self.blobs, self.incoming, self.outputs):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(root / "v1.sqlite3"), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: Iterable[Any] = ()) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count = self._db.execute(sql, tuple(args)).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return count

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # --- blobs -------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256[2:]

    def keep_blob(self, staged: Path, sha256: str) -> Path:
        """Move a fully written, fsynced staging file into the blob store (a copy already there wins)."""
        target = self.blob_path(sha256)
        if target.is_file():
            staged.unlink(missing_ok=True)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        fsync_dir(target.parent)
        return target

    # --- uploads -----------------------------------------------------------------------------
    def add_upload(self, upload: dict[str, Any]) -> None:
        self._write(f"INSERT INTO uploads ({', '.join(_UPLOAD_COLUMNS)}) VALUES ({', '.join('?' * len(_UPLOAD_COLUMNS))})",
                    (upload.get(c) for c in _UPLOAD_COLUMNS))

    def upload(self, upload_id: str) -> Optional[dict[str, Any]]:
        rows = self._rows(f"SELECT {', '.join(_UPLOAD_COLUMNS)} FROM uploads WHERE id=?", (upload_id,))
        return dict(zip(_UPLOAD_COLUMNS, rows[0])) if rows else None

    def set_upload(self, upload_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        self._write(f"UPDATE uploads SET {sets} WHERE id=?", (*fields.values(), upload_id))

    # --- files -------------------------------------------------------------------------------
    def add_file(self, record: dict[str, Any]) -> dict[str, Any]:
        record = {"expires_at": None, "sha256": None, "path": None, "job_id": None, **record}
        self._write(f"INSERT INTO files ({', '.join(_FILE_COLUMNS)}) VALUES ({', '.join('?' * len(_FILE_COLUMNS))})",
                    (record.get(c) for c in _FILE_COLUMNS))
        return record

    def file(self, file_id: str) -> Optional[dict[str, Any]]:
        rows = self._rows(f"SELECT {', '.join(_FILE_COLUMNS)} FROM files WHERE id=?", (file_id,))
        if not rows:
            return None
        record = dict(zip(_FILE_COLUMNS, rows[0]))
        expired = record["expires_at"] is not None and record["expires_at"] <= int(time.time())
        return None if expired else record

    def files(self, purpose: Optional[str]) -> list[dict[str, Any]]:
        now = int(time.time())
        rows = self._rows(f"SELECT {', '.join(_FILE_COLUMNS)} FROM files ORDER BY seq")
        records = [dict(zip(_FILE_COLUMNS, r)) for r in rows]
        return [r for r in records if (r["expires_at"] is None or r["expires_at"] > now)
                and (purpose is None or r["purpose"] == purpose)]

    def delete_file(self, file_id: str) -> bool:
        return self._write("DELETE FROM files WHERE id=?", (file_id,)) > 0

    def live_hashes(self) -> set[str]:
        """The SHA-256 of every uploaded file still listed (its blob must stay)."""
        return {r[0] for r in self._rows("SELECT DISTINCT sha256 FROM files WHERE purpose != 'parse_output' "
                                         "AND sha256 IS NOT NULL")}

    # --- jobs --------------------------------------------------------------------------------
    def add_job(self, job_id: str, tier: str, output_formats: list[str], ocr_mode: str,
                files: list[dict[str, Any]]) -> None:
        self._write("INSERT INTO jobs (id, tier, output_formats, ocr_mode, files) VALUES (?, ?, ?, ?, ?)",
                    (job_id, tier, json.dumps(output_formats), ocr_mode, json.dumps(files)))

    def job(self, job_id: str) -> Optional[dict[str, Any]]:
        rows = self._rows("SELECT tier, output_formats, ocr_mode, files, canceled, outputs, counted FROM jobs WHERE id=?",
                          (job_id,))
        if not rows:
            return None
        tier, formats, ocr_mode, files, canceled, outputs, counted = rows[0]
        return {"id": job_id, "tier": tier, "output_formats": json.loads(formats), "ocr_mode": ocr_mode,
                "files": json.loads(files), "canceled": json.loads(canceled) if canceled else None,
                "outputs": json.loads(outputs) if outputs else None, "counted": bool(counted)}

    def job_ids(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT id FROM jobs")]

    def forget(self, gone_jobs: Iterable[str], now: int, canceled_before: str) -> None:
        """Drop files past their expiry, and the rows of jobs the core deleted (a canceled one is shown as
        canceled until `canceled_before`, an ISO time, like a finished job until retention takes it)."""
        self._write("DELETE FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        for job_id in gone_jobs:
            meta = self.job(job_id)
            if meta is None or (meta["canceled"] and (meta["canceled"].get("finished_at") or "") >= canceled_before):
                continue
            self._write("DELETE FROM files WHERE job_id=?", (job_id,))
            self._write("DELETE FROM jobs WHERE id=?", (job_id,))

    def set_job(self, job_id: str, **fields: Any) -> None:
        values = {k: (json.dumps(v) if k in ("canceled", "outputs") and v is not None else v) for k, v in fields.items()}
        sets = ", ".join(f"{k}=?" for k in values)
        self._write(f"UPDATE jobs SET {sets} WHERE id=?", (*values.values(), job_id))

    # --- usage -------------------------------------------------------------------------------
    def add_usage(self, **counts: int) -> None:
        for key, n in counts.items():
            self._write("INSERT INTO usage (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=value+?",
                        (key, n, n))

    def usage(self) -> dict[str, int]:
        return {k: v for k, v in self._rows("SELECT key, value FROM usage")}
