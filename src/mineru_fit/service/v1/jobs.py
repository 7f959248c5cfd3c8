"""A /v1 job: accepted through the shared core, shown as MinerU 4's job payload, its outputs as file objects."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional, Sequence

from mineru_fit import __version__
from mineru_fit.errors import RequestRefusedError, UsageError
from mineru_fit.parsing import PageSelection
from mineru_fit.parsing.renderers.mineru4 import SUFFIXES, write_zip
from mineru_fit.service.core import JobRequest, ServiceCore, Upload
from mineru_fit.service.jobs import Job, JobStatus
from mineru_fit.service.results import FileOutput, file_outputs
from mineru_fit.service.v1 import tiers
from mineru_fit.service.v1.errors import fail, from_refusal, invalid
from mineru_fit.service.v1.store import V1Store, new_id

OUTPUT_FORMATS = ("markdown", "middle_json", "structured_content", "zip")
TERMINAL = frozenset({"completed", "partial", "failed", "canceled"})
_STATUS = {JobStatus.queued: "queued", JobStatus.running: "running", JobStatus.succeeded: "completed",
           JobStatus.partial: "partial", JobStatus.failed: "failed"}
# MinerU 4's names for each output file of a source named NAME (its api_server).
_OUTPUT_NAMES = {"markdown": "{}.md", "middle_json": "{}.middle.json",
                 "structured_content": "{}.structured_content.json", "zip": "{}.zip"}


def iso(ts: Optional[float]) -> Optional[str]:
    """MinerU's timestamps: ISO-8601 UTC to the second."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None


def public_id(core_id: str) -> str:
    return f"job_{core_id}"


def core_id(job_id: str) -> str:
    return job_id[4:] if job_id.startswith("job_") else ""


def page_selection(text: Optional[str], param: str) -> Optional[PageSelection]:
    """MinerU's page_range (1-based, '1-5,8', 'all') as ours; its from-the-end form (r3-r1) is refused by name."""
    value = (text or "").strip()
    if value.lower() in ("", "all"):
        return None
    if "r" in value.lower():
        invalid(f"page_range {value!r}: pages counted from the end (r3-r1) are not supported here — use 1-based "
                "page numbers such as 1-5,8", param=param)
    try:
        return PageSelection.parse(value)
    except UsageError as exc:
        invalid(f"page_range {value!r}: {exc}", param=param)


@dataclass(frozen=True)
class Source:
    """One input of a job: the client's file name, its bytes, and the /v1 file it came from (if any)."""

    name: str
    chunks: Callable[[], AsyncIterator[bytes]]
    file_id: Optional[str] = None


class V1Jobs:
    """Submits /v1 jobs to the shared core and answers for them in MinerU 4's shapes."""

    def __init__(self, core: ServiceCore, store: V1Store) -> None:
        self.core = core
        self.store = store

    @property
    def access_level(self) -> str:
        return "registered" if self.core.config.token else "anonymous"

    # --- submitting --------------------------------------------------------------------------
    async def submit(self, sources: Sequence[Source], *, tier: Optional[str], ocr_mode: str, page_range: Optional[str],
                     output_formats: list[str]) -> dict[str, Any]:
        """Accept a job (the shared core checks and stores its files durably) and return its payload."""
        for fmt in output_formats:
            if fmt not in OUTPUT_FORMATS:
                fail(400, "unsupported_output_format", f"Unknown output format: {fmt} — this server writes "
                     f"{', '.join(OUTPUT_FORMATS)}", param="output_formats")
        if not output_formats:
            invalid("output_formats is empty — name one or more of " + ", ".join(OUTPUT_FORMATS), param="output_formats")
        chosen = tiers.resolve(tier, self.core.config.engine)
        if chosen == "flash" and ocr_mode == "ocr":
            invalid("ocr_mode 'ocr' with tier flash: flash reads only the text layer — use tier standard (the VLM reads "
                    "the page image)", param="ocr_mode")
        if chosen == "standard" and ocr_mode == "txt":
            invalid("ocr_mode 'txt' with tier standard: mineru-fit's standard (MinerU2.5) always reads the page image — "
                    "use tier flash for the text layer", param="ocr_mode")
        pages = page_selection(page_range, "page_range")
        request = JobRequest(tier=tiers.OURS[chosen], backend=chosen, pages=pages, return_md=True,
                             return_content_list=True, return_images=True)
        try:
            job = await self.core.submit([Upload(s.name, s.chunks()) for s in sources], request)
        except RequestRefusedError as exc:
            raise from_refusal(exc) from exc
        files = [{"name": s.name, "file_id": s.file_id, "page_range": pages.text if pages else ""} for s in sources]
        await asyncio.to_thread(self.store.add_job, job.id, chosen, list(dict.fromkeys(output_formats)), ocr_mode, files)
        await asyncio.to_thread(self.store.add_usage, jobs_created=1)
        return await self.payload(public_id(job.id))

    # --- reading -----------------------------------------------------------------------------
    async def find(self, job_id: str) -> tuple[Optional[Job], dict[str, Any]]:
        """The core job (None once canceled) and its /v1 options; 404 when neither exists."""
        cid = core_id(job_id)
        meta = await asyncio.to_thread(self.store.job, cid) if cid else None
        job = await self.core.get(cid) if cid else None
        if job is None and (meta is None or meta["canceled"] is None):
            fail(404, "job_not_found", f"Job {job_id[:80]} not found")
        if meta is None:  # a job submitted through the 2.x routes: shown with MinerU's defaults
            assert job is not None
            meta = {"id": cid, "tier": "flash" if job.options.tier == "flash" else "standard",
                    "output_formats": ["markdown"], "ocr_mode": "auto", "canceled": None, "outputs": None,
                    "counted": True, "files": [{"name": f.original, "file_id": None, "page_range": job.options.pages or ""}
                                               for f in job.files]}
        return job, meta

    async def payload(self, job_id: str) -> dict[str, Any]:
        job, meta = await self.find(job_id)
        if job is None:
            return meta["canceled"]
        status = _STATUS[job.status]
        outputs = await self._outputs(job, meta) if status in TERMINAL else {}
        files = [self._file(i, job, meta, status, outputs) for i in range(len(job.files))]
        done = sum(f["status"] == "completed" for f in files)
        failed = sum(f["status"] == "failed" for f in files)
        if status in TERMINAL and not meta["counted"]:
            pages = sum(f.pages for f, entry in zip(job.files, files) if entry["status"] == "completed")
            await asyncio.to_thread(self.store.add_usage, files_processed=done, pages_processed=pages)
            await asyncio.to_thread(self.store.set_job, job.id, counted=1)
        return {
            "job_id": job_id, "status": status, "created_at": iso(job.created_at), "started_at": iso(job.started_at),
            "finished_at": iso(job.finished_at), "tier": meta["tier"], "output_formats": meta["output_formats"],
            "access_level": self.access_level, "progress": {"completed": done, "failed": failed, "total": len(files)},
            "files": files, "links": {"self": f"/v1/parse/jobs/{job_id}", "cancel": f"/v1/parse/jobs/{job_id}"},
        }

    def _file(self, index: int, job: Job, meta: dict[str, Any], status: str,
              outputs: dict[str, Any]) -> dict[str, Any]:
        info = meta["files"][index] if index < len(meta["files"]) else {}
        stored = job.files[index]
        entry: dict[str, Any] = {"file_id": info.get("file_id"), "name": info.get("name") or stored.original,
                                 "page_range": info.get("page_range") or f"1-{stored.pages}", "status": "queued",
                                 "parse": None, "output_files": None, "error": None}
        report = {f.get("name"): f for f in (job.report or {}).get("files", [])}.get(stored.name)
        if status in TERMINAL:
            ok = report is not None and report.get("status") in ("success", "partial") and str(index) in outputs
            entry["status"] = "completed" if ok else "failed"
            if ok:
                entry["output_files"] = outputs[str(index)]
                seconds = (job.finished_at or 0) - (job.started_at or job.finished_at or 0)
                model = (self.core.config.engine.model_name or None) if meta["tier"] == "standard" else None
                entry["parse"] = {"model_used": model,
                                  "duration_ms": int(seconds * 1000 / max(1, len(job.files))),
                                  "parser_version": f"mineru-fit {__version__}"}
            else:
                errors = (report or {}).get("errors") or [job.error or "nothing on this file was converted"]
                entry["error"] = {"type": "engine_error", "code": "parse_failed", "message": "; ".join(errors[:5]),
                                  "param": None}
        elif status == "running":
            settled = self.core.live.get(job.id).files.get(stored.name, 0) if job.id in self.core.live else 0
            entry["status"] = "completed" if settled >= stored.pages else "running"
        return entry

    async def _outputs(self, job: Job, meta: dict[str, Any]) -> dict[str, Any]:
        """Each converted file's outputs as file objects, registered once when the job is first seen finished."""
        if meta["outputs"] is not None:
            return meta["outputs"]
        found = file_outputs(job, self.core.job_dir(job.id))
        registered: dict[str, Any] = {}
        for index, output in enumerate(found):
            if output.status not in ("success", "partial") or output.path(SUFFIXES["middle_json"]) is None:
                continue
            name = (meta["files"][index]["name"] if index < len(meta["files"]) else output.name) or output.name
            refs = {}
            for fmt in meta["output_formats"]:
                path = (await asyncio.to_thread(self._zip, job.id, index, output) if fmt == "zip"
                        else output.path(SUFFIXES[fmt]))
                if path is None:
                    continue
                record = await asyncio.to_thread(self.store.add_file, {
                    "id": new_id("file-"), "filename": _OUTPUT_NAMES[fmt].format(name), "bytes": path.stat().st_size,
                    "created_at": int(time.time()), "purpose": "parse_output", "path": str(path), "job_id": job.id,
                    "expires_at": int(time.time() + self.core.config.retention_s) if self.core.config.retention_s else None})
                refs[fmt] = {"file_id": record["id"], "bytes": record["bytes"]}
            registered[str(index)] = refs
        await asyncio.to_thread(self.store.set_job, job.id, outputs=registered)
        return registered

    def _zip(self, job_id: str, index: int, output: FileOutput) -> Optional[Path]:
        """MinerU 4's self-contained zip of one file, kept beside the /v1 store."""
        if output.folder is None:
            return None
        dest = self.store.outputs / job_id / f"{index}.zip"
        dest.parent.mkdir(parents=True, exist_ok=True)
        return write_zip(output.folder, output.name, dest)

    # --- cancelling --------------------------------------------------------------------------
    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a queued or running job; it stays visible as canceled (its files and outputs are removed)."""
        snapshot = await self.payload(job_id)
        if snapshot["status"] in TERMINAL:
            fail(409, "job_already_terminal", f"Job is {snapshot['status']}")
        now = time.time()
        snapshot.update(status="canceled", finished_at=iso(now))
        cid = core_id(job_id)
        if await asyncio.to_thread(self.store.job, cid) is None:
            fail(409, "job_not_cancelable", "this job was submitted through the 2.x routes — DELETE /tasks/{id} there")
        await asyncio.to_thread(self.store.set_job, cid, canceled=snapshot)
        await self.core.delete(cid)
        return {"job_id": job_id, "status": "canceled", "canceled_at": iso(now)}
