"""A submission on its way in: the files of one request, stored, checked and moved into place.

Uploads are written and fsynced into a staging folder, checked (type, size, pages), and the folder is
renamed into place; only then does the job store get the job's row (see ServiceCore.submit).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Optional, Sequence

from mineru_fit.parsing import PageSelection
from mineru_fit.service.config import Limits
from mineru_fit.service.files import ByteBudget, fsync_dir, inspect_upload, safe_filename, save_stream
from mineru_fit.service.jobs import JobFile


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


async def store_files(inputs: Path, uploads: Sequence[Upload], pages: Optional[PageSelection],
                      limits: Limits) -> list[JobFile]:
    """Write each upload under `inputs` with a safe unique name, within the size limit, and check it."""
    inputs.mkdir(parents=True)
    budget = ByteBudget(limits.max_upload_bytes)
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


def remove_orphans(jobs_dir: Path, exports_dir: Path, known: set[str]) -> None:
    """Staging folders and folders whose row was never committed go, as do the UI's old downloads."""
    for entry in jobs_dir.iterdir():
        if entry.name not in known:
            shutil.rmtree(entry, ignore_errors=True)
    for entry in exports_dir.iterdir():
        entry.unlink(missing_ok=True)


def commit_folder(staging: Path, final: Path) -> None:
    """fsync the uploads' folder entries, then rename it into place and fsync that."""
    for folder in (staging / "inputs", staging):
        fsync_dir(folder)
    os.rename(staging, final)
    fsync_dir(final.parent)
