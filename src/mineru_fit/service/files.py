"""Uploads onto disk: safe unique names, the size and page limits, the type read from the bytes, fsync.

A client's file name is only ever a label: the stored name keeps its last path component with
everything but letters, digits and a few punctuation marks replaced, so no upload can reach
outside its job's folder. PDFium is not thread-safe, so every look inside a file holds one lock.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from mineru_fit.errors import InputDocumentError, RequestRefusedError
from mineru_fit.parsing import PageSelection
from mineru_fit.units import mib

CHUNK_BYTES = 1024 * 1024
MAX_STEM_CHARS = 100
_UNSAFE = re.compile(r"[^\w.\-+()=@,]")     # \w: letters and digits of any script, and _
_PDFIUM = threading.Lock()


def safe_filename(raw: Optional[str], used: set[str]) -> str:
    """A stored name for the client's `raw` name, unique (case-insensitively, by stem) among `used`; adds it there."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]           # C:\docs\a.pdf and ../../a.pdf are both a.pdf
    name = "".join(ch for ch in name if ch.isprintable())      # NUL, newlines, other control characters
    name = _UNSAFE.sub("_", name).strip(" ._")                  # leading dots: no hidden files, no '..'
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    stem = stem.strip(" ._")[:MAX_STEM_CHARS] or "document"
    suffix = re.sub(r"[^a-z0-9]", "", suffix.lower())[:8]
    candidate, number = stem, 1
    while candidate.casefold() in used:                       # a.pdf and a.png would share <out>/a/
        number += 1
        candidate = f"{stem}_{number}"
    used.add(candidate.casefold())
    return f"{candidate}.{suffix}" if suffix else candidate


class ByteBudget:
    """The bytes one request may still upload."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0

    def take(self, n: int) -> None:
        self.used_bytes += n
        if self.used_bytes > self.limit_bytes:
            raise RequestRefusedError(
                f"the upload is larger than this service's limit of {mib(self.limit_bytes)} per request — "
                "send fewer or smaller files (the limit is --max-upload-mb)", status=413)


async def save_stream(chunks: AsyncIterator[bytes], dest: Path, budget: ByteBudget) -> int:
    """Write `chunks` to `dest` within `budget`, fsynced; the size in bytes."""
    size = 0
    with open(dest, "xb") as out:
        async for chunk in chunks:
            budget.take(len(chunk))
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


async def upload_chunks(upload: Any) -> AsyncIterator[bytes]:
    """A Starlette UploadFile, read in chunks (it may be spooled to disk already)."""
    while True:
        chunk = await upload.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            if not chunk:
                return
            yield chunk


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new files, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _shown(exc: Exception, path: Path, shown: str) -> str:
    # Messages from the parsers name the server's path and the CLI's flags: say it the client's way.
    text = str(exc).replace(str(path), shown)
    return text.replace("pass its password with --password", "remove the password before uploading (the API takes none)")


def inspect_upload(path: Path, shown: str, pages: Optional[PageSelection]) -> tuple[str, int]:
    """('pdf' | 'image', pages this job would parse) for a stored upload; 415/422 when it cannot be parsed."""
    from mineru_fit.parsing.providers import open_document
    from mineru_fit.parsing.providers.sniff import sniff

    try:
        kind = sniff(path)
    except InputDocumentError as exc:
        empty = path.stat().st_size == 0
        raise RequestRefusedError(_shown(exc, path, shown), status=422 if empty else 415) from exc
    with _PDFIUM:
        try:
            doc = open_document(path)
        except InputDocumentError as exc:
            raise RequestRefusedError(_shown(exc, path, shown)) from exc
        except Exception as exc:  # whatever a reader library throws is this file's problem, not the service's
            raise RequestRefusedError(f"{shown} cannot be opened ({type(exc).__name__}) — re-export it") from exc
        try:
            count = doc.page_count
        finally:
            doc.close()
    if kind != "pdf" or pages is None:
        return kind, count
    try:
        selected, _ = pages.resolve(count)
    except InputDocumentError as exc:
        raise RequestRefusedError(f"{shown} has {count} page{'s' if count != 1 else ''} and the page range selects none "
                                  f"of them — start_page_id counts from 0: use 0 to {count - 1}") from exc
    return kind, len(selected)
