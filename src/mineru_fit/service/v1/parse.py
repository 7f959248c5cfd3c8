"""/v1 parse jobs, tasks and file_parse: MinerU 4's JSON, multipart and octet-stream submissions."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Literal, Optional, Union

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from mineru_fit.errors import RequestRefusedError
from mineru_fit.service.files import file_chunks, upload_chunks
from mineru_fit.service.v1.context import V1Context
from mineru_fit.service.v1.errors import fail, invalid
from mineru_fit.service.v1.jobs import OUTPUT_FORMATS, TERMINAL, Source, core_id

MAX_INLINE_BYTES = 1024 * 1024   # MinerU 4's default for inline sources
Tier = Literal["flash", "basic", "standard", "advanced"]
OcrMode = Literal["auto", "txt", "ocr"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileIdSource(_Strict):
    type: Literal["file_id"] = "file_id"
    file_id: str


class InlineSource(_Strict):
    type: Literal["inline"] = "inline"
    name: str = Field(min_length=1)
    data: str = Field(min_length=1)


class UrlSource(_Strict):
    type: Literal["url"] = "url"
    url: str


class LocalSource(_Strict):
    type: Literal["local"] = "local"
    path: str = Field(min_length=1)


class JobFileEntry(_Strict):
    source: Annotated[Union[FileIdSource, InlineSource, UrlSource, LocalSource], Field(discriminator="type")]
    page_range: Optional[str] = None


class CreateJob(_Strict):
    files: list[JobFileEntry] = Field(min_length=1)
    tier: Optional[Tier] = None
    ocr_mode: OcrMode = "auto"
    output_formats: list[str] = Field(default_factory=lambda: ["markdown"])
    callback: Optional[dict[str, Any]] = None


class QueryOptions(_Strict):
    """MinerU 4 takes a multipart or raw upload's options only from the query string."""

    tier: Optional[Tier] = None
    ocr_mode: OcrMode = "auto"
    page_range: str = ""
    output_formats: list[str] = Field(default_factory=lambda: ["markdown"])
    filename: Optional[str] = Field(default=None, min_length=1)
    sha256sum: Optional[str] = Field(default=None, pattern=r"^[a-f0-9]{64}$")


def _validation(exc: ValidationError) -> None:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    invalid(f"Invalid request: {param}: {first.get('msg')}" if param else f"Invalid request: {first.get('msg')}",
            param=param or None)


def _one_range(entries: list[JobFileEntry]) -> Optional[str]:
    """mineru-fit runs one page range per job: files may share it, not differ."""
    ranges = {(e.page_range or "").strip() for e in entries}
    if len(ranges) > 1:
        index = next(i for i, e in enumerate(entries) if (e.page_range or "").strip() != (entries[0].page_range or "").strip())
        invalid("files in one job must share one page_range here — submit files with other ranges as their own job",
                param=f"files.{index}.page_range")
    return ranges.pop() or None


def _inline_chunks(data: bytes) -> Any:
    async def chunks() -> AsyncIterator[bytes]:
        yield data
    return chunks


async def _json_sources(ctx: V1Context, body: CreateJob) -> list[Source]:
    sources: list[Source] = []
    for index, entry in enumerate(body.files):
        source = entry.source
        param = f"files.{index}.source"
        if isinstance(source, (UrlSource, LocalSource)):
            fail(400, "unsupported_source", f"{source.type} sources are not read by mineru-fit (it never fetches an address "
                 "or reads a path a request names) — upload the file (POST /v1/uploads) or send it inline", param=param)
        if isinstance(source, InlineSource):
            try:
                data = base64.b64decode(source.data, validate=True)
            except (binascii.Error, ValueError):
                invalid("inline source data must be valid base64", param=param, code="unsupported_source")
            if len(data) > MAX_INLINE_BYTES:
                invalid(f"inline source exceeds max_inline_bytes ({MAX_INLINE_BYTES}) — upload it instead", param=param,
                        code="unsupported_source")
            sources.append(Source(source.name, _inline_chunks(data)))
            continue
        record = await asyncio.to_thread(ctx.store.file, source.file_id)
        path = ctx.store.blob_path(record["sha256"]) if record is not None and record["sha256"] else None
        # (its bytes can be gone too: the file expired and was swept since the client listed it)
        if record is None or record["purpose"] != "parse" or path is None or not path.is_file():
            fail(404, "file_not_found", f"File {source.file_id[:80]} not found", param=param)
        sources.append(Source(record["filename"], lambda p=path: file_chunks(p), source.file_id))
    return sources


async def _hashed(stream: AsyncIterator[bytes], expected: Optional[str], declared: int) -> AsyncIterator[bytes]:
    """A raw upload's bytes, checked against its Content-Length and sha256sum before the job is committed."""
    digest, size = hashlib.sha256(), 0
    async for chunk in stream:
        digest.update(chunk)
        size += len(chunk)
        yield chunk
    if size != declared:
        raise RequestRefusedError(f"Declared size {declared} does not match the {size} bytes received", status=400)
    if expected and digest.hexdigest() != expected:
        raise RequestRefusedError("SHA-256 mismatch", status=400)


async def submit_request(ctx: V1Context, request: Request, *, sync: bool, force_zip: bool) -> dict[str, Any]:
    """Read a task submission (JSON, multipart or raw bytes) and submit it as a job."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    params = dict(request.query_params)
    if sync:
        params.pop("response_format", None)
        params.pop("wait_timeout", None)
    if media == "application/json":
        if params:
            invalid(f"JSON parse options must be supplied in the request body, not the query ({', '.join(params)})",
                    param=next(iter(params)))
        try:
            body = CreateJob.model_validate(await request.json())
        except ValidationError as exc:
            _validation(exc)
        except ValueError:
            invalid("the body is not JSON")
        return await submit_job(ctx, body, force_zip=force_zip)
    if "output_formats" in params:
        params["output_formats"] = request.query_params.getlist("output_formats")  # type: ignore[assignment]
    try:
        options = QueryOptions.model_validate(params)
    except ValidationError as exc:
        _validation(exc)
    formats = list(options.output_formats) + (["zip"] if force_zip and "zip" not in options.output_formats else [])
    if media == "application/octet-stream":
        if options.filename is None:
            invalid("filename is required for raw uploads", param="filename")
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            invalid("Content-Length is required for raw uploads", status=411)
        sources = [Source(options.filename, lambda: _hashed(request.stream(), options.sha256sum, int(length or 0)))]
        return await ctx.jobs.submit(sources, tier=options.tier, ocr_mode=options.ocr_mode,
                                     page_range=options.page_range, output_formats=formats)
    if media != "multipart/form-data":
        invalid("Use application/json, multipart/form-data or application/octet-stream", status=415)
    if options.filename is not None or options.sha256sum is not None:
        invalid("filename and sha256sum are only supported for raw uploads",
                param="filename" if options.filename is not None else "sha256sum")
    async with request.form(max_files=ctx.core.config.limits.max_files + 1, max_fields=0) as form:
        files = form.getlist("files")
        if not files or any(key != "files" for key in form):
            invalid("Supply one or more files fields (options go in the query string)",
                    param=next((k for k in form if k != "files"), "files"))
        if any(not isinstance(f, UploadFile) or not f.filename for f in files):
            invalid("Every files field must contain a named file", param="files")
        sources = [Source(str(f.filename), lambda f=f: upload_chunks(f)) for f in files]
        return await ctx.jobs.submit(sources, tier=options.tier, ocr_mode=options.ocr_mode,
                                     page_range=options.page_range, output_formats=formats)


async def submit_job(ctx: V1Context, body: CreateJob, *, force_zip: bool = False) -> dict[str, Any]:
    if body.callback is not None:
        invalid("Webhook callback is not supported by this server. Use polling via GET /v1/parse/jobs/{job_id}.",
                param="callback")
    page_range = _one_range(body.files)
    sources = await _json_sources(ctx, body)
    formats = list(body.output_formats) + (["zip"] if force_zip and "zip" not in body.output_formats else [])
    return await ctx.jobs.submit(sources, tier=body.tier, ocr_mode=body.ocr_mode, page_range=page_range,
                                 output_formats=formats)


def task_payload(job: dict[str, Any]) -> dict[str, Any]:
    """A job payload under its task name and links (MinerU 4's task_api)."""
    payload = json.loads(json.dumps(job))
    task_id = str(payload.pop("job_id"))
    base = f"/v1/tasks/{task_id}"
    payload.update(task_id=task_id, status_url=base, result_url=f"{base}/result", links={"self": base, "cancel": base})
    return payload


def _read(ctx: V1Context, file_id: str) -> bytes:
    record = ctx.store.file(file_id)
    if record is None or not record["path"] or not Path(record["path"]).is_file():
        fail(502, "invalid_response", f"output {file_id} is missing")
    return Path(record["path"]).read_bytes()


async def task_result(ctx: V1Context, job: dict[str, Any], response_format: str) -> Response:
    """202 while unfinished, 409 when failed or canceled, else the outputs inline (JSON) or as a zip."""
    payload = task_payload(job)
    status = job["status"]
    if status not in TERMINAL:
        return JSONResponse(payload, status_code=202)
    if status in ("failed", "canceled"):
        return JSONResponse(payload, status_code=409)
    if response_format == "zip":
        if "zip" not in job["output_formats"]:
            invalid("Request zip in output_formats when submitting the task", code="unsupported_output_format")
        archives = [(i, await asyncio.to_thread(_read, ctx, f["output_files"]["zip"]["file_id"]))
                    for i, f in enumerate(job["files"]) if f["status"] == "completed"]
        data = archives[0][1] if len(job["files"]) == 1 else await asyncio.to_thread(_combine, archives, payload)
        return Response(data, media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{payload["task_id"]}.zip"',
            "X-MinerU-Task-Id": payload["task_id"], "X-MinerU-Task-Status": status})
    for file in payload["files"]:
        file["content"] = {}
        if file["status"] != "completed":
            continue
        for fmt, ref in (file.get("output_files") or {}).items():
            if fmt != "zip":
                data = await asyncio.to_thread(_read, ctx, ref["file_id"])
                file["content"][fmt] = data.decode("utf-8") if fmt == "markdown" else json.loads(data)
    return JSONResponse(payload)


def _combine(archives: list[tuple[int, bytes]], payload: dict[str, Any]) -> bytes:
    """Several files' zips in one: manifest.json, then each under its 1-based number (0001/...)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        target.writestr("manifest.json", json.dumps(payload, ensure_ascii=False))
        for index, data in archives:
            with zipfile.ZipFile(io.BytesIO(data)) as source:
                for info in source.infolist():
                    target.writestr(f"{index + 1:04d}/{info.filename}", source.read(info))
    return buffer.getvalue()


def build_router(ctx: V1Context) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/parse/jobs", status_code=202, tags=["Jobs"])
    async def create_job(body: CreateJob) -> JSONResponse:
        return JSONResponse(await submit_job(ctx, body), status_code=202)

    @router.get("/parse/jobs/{job_id}", tags=["Jobs"])
    async def get_job(job_id: str) -> dict[str, Any]:
        return await ctx.jobs.payload(job_id)

    @router.get("/parse/jobs", tags=["Jobs"])
    async def list_jobs(status: Optional[str] = None, limit: int = Query(default=20, ge=1, le=100),
                        after: Optional[str] = None, order: Literal["asc", "desc"] = "desc",
                        created_after: Optional[str] = None) -> dict[str, Any]:
        items = []
        for cid in await asyncio.to_thread(ctx.store.job_ids):
            try:
                job = await ctx.jobs.payload(f"job_{cid}")
            except Exception:  # a job deleted by retention since: not listed
                continue
            items.append({"job_id": job["job_id"], "status": job["status"], "created_at": job["created_at"],
                          "file_count": len(job["files"])})
        allowed = set(status.split(",")) if status else None
        items = [i for i in items if (allowed is None or i["status"] in allowed)
                 and (created_after is None or i["created_at"] >= created_after)]
        items.sort(key=lambda i: (i["created_at"], i["job_id"]), reverse=order == "desc")
        start = next((n + 1 for n, i in enumerate(items) if i["job_id"] == after), 0) if after else 0
        page = items[start:start + limit]
        return {"object": "list", "data": page, "first_id": page[0]["job_id"] if page else None,
                "last_id": page[-1]["job_id"] if page else None, "has_more": start + limit < len(items)}

    @router.delete("/parse/jobs/{job_id}", tags=["Jobs"])
    async def cancel_job(job_id: str) -> dict[str, Any]:
        return await ctx.jobs.cancel(job_id)

    @router.post("/tasks", status_code=202, tags=["Tasks"])
    async def create_task(request: Request) -> JSONResponse:
        return JSONResponse(task_payload(await submit_request(ctx, request, sync=False, force_zip=False)), status_code=202)

    @router.get("/tasks/{task_id}", tags=["Tasks"])
    async def get_task(task_id: str) -> dict[str, Any]:
        return task_payload(await ctx.jobs.payload(task_id))

    @router.delete("/tasks/{task_id}", tags=["Tasks"])
    async def cancel_task(task_id: str) -> dict[str, Any]:
        await ctx.jobs.cancel(task_id)
        return task_payload(await ctx.jobs.payload(task_id))

    @router.get("/tasks/{task_id}/result", tags=["Tasks"], response_model=None)
    async def get_result(task_id: str, response_format: Literal["json", "zip"] = "json") -> Response:
        return await task_result(ctx, await ctx.jobs.payload(task_id), response_format)

    @router.post("/file_parse", tags=["Tasks"], response_model=None)
    async def file_parse(request: Request, response_format: Literal["json", "zip"] = "json",
                         wait_timeout: int = Query(default=300, ge=1, le=3600)) -> Response:
        """Submit and wait (at most wait_timeout s; the job goes on if the wait ends first: 202)."""
        job = await submit_request(ctx, request, sync=True, force_zip=response_format == "zip")
        if job["status"] not in TERMINAL:
            await ctx.core.wait(core_id(job["job_id"]), wait_timeout)
            job = await ctx.jobs.payload(job["job_id"])
        return await task_result(ctx, job, response_format)

    return router
