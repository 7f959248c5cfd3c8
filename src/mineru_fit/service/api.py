"""The parse API: mineru-api's POST /file_parse, asynchronous /tasks, /health, /metrics, docs at /docs."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Literal, Optional

from fastapi import Depends, FastAPI, File, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask

from mineru_fit import __version__
from mineru_fit.errors import RequestRefusedError
from mineru_fit.service import answers
from mineru_fit.service.core import ServiceCore, Upload
from mineru_fit.service.docs import app_with_offline_docs
from mineru_fit.service.files import upload_chunks
from mineru_fit.service.guard import Guard
from mineru_fit.service.jobs import Job, JobStatus
from mineru_fit.service.mineru_form import (
    FileResultBody, HealthBody, ParseForm, ParseResultBody, Progress, StoreBody, TaskBody, TaskFile,
)
from mineru_fit.service.results import Wanted, file_body, file_outputs, write_zip

logger = logging.getLogger(__name__)

NOT_DONE_RETRY_S = 2
_bearer = HTTPBearer(auto_error=False, description="MINERU_FIT_API_TOKEN, when the service was started with one.")


def result_body(core: ServiceCore, job: Job) -> ParseResultBody:
    """mineru-api's JSON for a finished job."""
    wanted = _wanted(job)
    results = {out.name: FileResultBody(**file_body(out, wanted)) for out in file_outputs(job, core.job_dir(job.id))}
    return ParseResultBody(backend=job.options.backend, version=__version__, task_id=job.id, status=job.status.value,
                           tier=job.options.tier, error=job.error, results=results)


def _wanted(job: Job) -> Wanted:
    return Wanted(md=job.options.return_md, content_list=job.options.return_content_list,
                  images=job.options.return_images)


def task_body(core: ServiceCore, job: Job) -> TaskBody:
    errors = [f"{f['name']}: {e}" for f in (job.report or {}).get("files", []) for e in f.get("errors", [])]
    return TaskBody(
        task_id=job.id, status=job.status.value, backend=job.options.backend, tier=job.options.tier,
        tier_reason=job.options.tier_reason, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, queue_position=core.queue_position(job.id),
        progress=Progress(pages_done=job.pages_done, pages_failed=job.pages_failed, pages_total=job.pages_total),
        current=core.current(job.id) or None,
        files=[TaskFile(name=f.name, filename=f.original, size_bytes=f.size_bytes, pages=f.pages) for f in job.files],
        error=job.error, errors=errors, status_url=f"/tasks/{job.id}", result_url=f"/tasks/{job.id}/result",
    )


async def finished_response(core: ServiceCore, job: Job, fmt: Literal["json", "zip"]) -> Response:
    """200 with the outputs (JSON or zip); 422 with the reasons when nothing could be converted."""
    status = 422 if job.status is JobStatus.failed else 200
    headers = {"x-task-id": job.id}
    if fmt == "zip" and status == 200:
        tmp = tempfile.NamedTemporaryFile(dir=core.exports_dir, prefix=f"{job.id}-", suffix=".zip", delete=False)
        tmp.close()
        outputs = file_outputs(job, core.job_dir(job.id))
        await asyncio.to_thread(write_zip, outputs, Path(tmp.name), _wanted(job))
        return FileResponse(tmp.name, media_type="application/zip", filename=f"{job.id}.zip", headers=headers,
                            background=BackgroundTask(_unlink, tmp.name))
    body = await asyncio.to_thread(result_body, core, job)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _refused(exc: RequestRefusedError) -> JSONResponse:
    headers = {"retry-after": str(exc.retry_after_s)} if exc.retry_after_s else None
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)


async def form_only(request: Request) -> None:
    """The 2.x form reads only its multipart fields: a query parameter would be dropped unseen, so it is refused."""
    if request.query_params:
        name = next(iter(request.query_params))[:60]
        raise RequestRefusedError(
            f"query parameter {name!r} is not read by POST {request.url.path} (the 2.x form takes its options as form "
            f"fields) — send {name} as a form field, or use MinerU 4's POST /v1{request.url.path}?{name}=…")


async def _submit(core: ServiceCore, form: ParseForm) -> Job:
    request = form.to_request()
    uploads = [Upload(f.filename, upload_chunks(f)) for f in form.files]
    try:
        return await core.submit(uploads, request)
    finally:
        for f in form.files:
            await f.close()


_GONE = object()


async def _client_gone(request: Request) -> None:
    """Return once the client has closed its connection (its body is read by now)."""
    while (await request.receive()).get("type") != "http.disconnect":
        pass


async def _wait_unless_gone(core: ServiceCore, job_id: str, request: Request) -> Any:
    """The finished job (None: deleted), or _GONE when the client left first — the job is then deleted, which
    stops its worker and closes its requests to the engine: nobody could ever read its result."""
    waiting = asyncio.ensure_future(core.wait(job_id))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, gone):
            task.cancel()
        await asyncio.gather(waiting, gone, return_exceptions=True)
    if waiting.done() and not waiting.cancelled():
        return waiting.result()
    logger.info("job %s: its /file_parse client went away; stopping it", job_id)
    await core.delete(job_id)
    return _GONE


def create_app(core: ServiceCore, *, manage_core: bool = True, open_prefixes: tuple[str, ...] = ()) -> FastAPI:
    """The FastAPI app over `core` (started and stopped with the app unless manage_core is False)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_core:
            await core.start()
        try:
            yield
        finally:
            if manage_core:
                await core.stop()

    app = app_with_offline_docs(
        title="mineru-fit parse API", version=__version__, lifespan=lifespan,
        description="MinerU-compatible document parsing (mineru-api's /file_parse form) with durable asynchronous "
                    "jobs. Results follow MinerU's layout: Markdown, content_list (bbox on a 0–1000 grid), images.",
    )
    config = core.config
    app.add_middleware(Guard, token=config.token, max_body_bytes=config.limits.max_upload_bytes,
                       capacity=core.check_capacity, open_prefixes=open_prefixes,
                       allowed_hosts=config.allowed_hosts, body_timeout_s=config.body_timeout_s)
    answers.install(app)
    app.add_exception_handler(RequestRefusedError, lambda _r, exc: _refused(exc))  # type: ignore[arg-type]

    async def authorised(credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(_bearer)]) -> None:
        """The Guard has checked the token already; this declares it in the OpenAPI schema."""

    secured = [Depends(authorised)]
    errors = {401: {"description": "Missing or wrong bearer token"}}
    refusals = {**errors, 413: {"description": "Upload over the size or file-count limit"},
                415: {"description": "Not a PDF, PNG, JPEG or WebP"},
                422: {"description": "A file or field that cannot be parsed as sent (the reason is in `detail`)"},
                503: {"description": "The queue is full: retry after Retry-After seconds"}}

    @app.get("/health", response_model=HealthBody, tags=["service"],
             responses={503: {"model": HealthBody, "description": "The job store cannot be written now"}})
    async def health() -> JSONResponse:
        gauges = core.gauges()
        engine = config.engine
        store = await core.store_state()
        body = HealthBody(status="ok" if store.writable else "degraded", version=__version__, engine=engine.kind,
                          engine_level=engine.level, tiers=["vlm", "flash"] if engine.url else ["flash"],
                          workers=config.workers, queued=int(gauges["queued"]), running=int(gauges["running"]),
                          store=StoreBody(writable=store.writable, error=store.error, free_bytes=store.free_bytes))
        return JSONResponse(body.model_dump(), status_code=200 if store.writable else 503)

    @app.get("/metrics", dependencies=secured, responses=errors, tags=["service"], response_class=Response)
    async def metrics() -> Response:
        body, content_type = core.metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/file_parse", dependencies=[*secured, Depends(form_only)], tags=["parse"], responses={
        200: {"model": ParseResultBody, "content": {"application/zip": {}},
              "description": "The outputs (a zip with response_format_zip)"}, **refusals})
    async def file_parse(request: Request, form: Annotated[ParseForm, File()]) -> Response:
        """Parse the uploaded files and answer when they are done (mineru-api's endpoint)."""
        job = await _submit(core, form)
        finished = await _wait_unless_gone(core, job.id, request)
        if finished is _GONE:
            return Response(status_code=499)  # nobody reads it: the client closed the connection
        if finished is None:
            return JSONResponse({"detail": "the job was deleted before it finished"}, status_code=410)
        return await finished_response(core, finished, "zip" if finished.options.zip else "json")

    @app.post("/tasks", status_code=202, dependencies=[*secured, Depends(form_only)], response_model=TaskBody, tags=["tasks"],
              responses=refusals)
    async def submit_task(form: Annotated[ParseForm, File()]) -> JSONResponse:
        """Accept the files as a job and answer at once (202) with where to follow it."""
        job = await _submit(core, form)
        body = task_body(core, job)
        return JSONResponse(body.model_dump(), status_code=202, headers={"location": body.status_url})

    @app.get("/tasks/{task_id}", dependencies=secured, response_model=TaskBody, tags=["tasks"],
             responses={**errors, 404: {"description": "No such task"}})
    async def task_status(task_id: str) -> Any:
        job = await core.get(task_id)
        if job is None:
            return JSONResponse({"detail": f"no task {task_id[:64]!r} — it never existed or was deleted"}, status_code=404)
        return task_body(core, job)

    @app.get("/tasks/{task_id}/result", dependencies=secured, tags=["tasks"], responses={
        200: {"model": ParseResultBody, "content": {"application/zip": {}}},
        404: {"description": "No such task"}, 409: {"description": "Not finished yet: retry after Retry-After"},
        422: {"description": "The task failed: nothing was converted"}, **errors})
    async def task_result(task_id: str, format: Optional[Literal["json", "zip"]] = None) -> Response:
        job = await core.get(task_id)
        if job is None:
            return JSONResponse({"detail": f"no task {task_id[:64]!r} — it never existed or was deleted"}, status_code=404)
        if not job.status.finished:
            body = task_body(core, job).model_dump()
            body["detail"] = f"task {job.id} is {job.status.value}: its result is not ready — poll {body['status_url']}"
            return JSONResponse(body, status_code=409, headers={"retry-after": str(NOT_DONE_RETRY_S)})
        return await finished_response(core, job, format or ("zip" if job.options.zip else "json"))

    @app.delete("/tasks/{task_id}", status_code=204, dependencies=secured, tags=["tasks"],
                responses={**errors, 404: {"description": "No such task"}})
    async def delete_task(task_id: str) -> Response:
        """Stop the task if it runs, and delete it with its files and outputs."""
        if not await core.delete(task_id):
            return JSONResponse({"detail": f"no task {task_id[:64]!r}"}, status_code=404)
        return Response(status_code=204)

    return app
