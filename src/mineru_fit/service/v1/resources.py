"""/v1 health, tiers, models, usage, uploads and files, as MinerU 4's mineru-api answers them."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any, Literal, Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mineru_fit import __version__
from mineru_fit.errors import RequestRefusedError
from mineru_fit.service.files import ByteBudget
from mineru_fit.service.v1 import tiers
from mineru_fit.service.v1.context import V1Context
from mineru_fit.service.v1.errors import fail
from mineru_fit.service.v1.jobs import OUTPUT_FORMATS
from mineru_fit.service.v1.store import new_id

SOURCES = ["file_id", "inline"]   # never url or local: this service reads no address or path a request names
UPLOAD_TTL_S = 3600


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(default=3600, ge=3600, le=2592000)


class CreateUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=1000)
    bytes: int = Field(gt=0)
    mime_type: str = Field(min_length=1, max_length=200)
    purpose: Literal["parse", "input_image"] = "parse"
    sha256sum: Optional[str] = Field(default=None, pattern=r"^[a-f0-9]{64}$")
    expires_after: Optional[ExpiresAfter] = None


class CompleteUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256sum: Optional[str] = Field(default=None, pattern=r"^[a-f0-9]{64}$")


def file_object(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "object": "file", "bytes": record["bytes"], "created_at": record["created_at"],
            "expires_at": record["expires_at"], "filename": record["filename"], "purpose": record["purpose"],
            "sha256sum": record["sha256"]}


def build_router(ctx: V1Context) -> APIRouter:
    router = APIRouter(prefix="/v1")
    store = ctx.store

    def upload_body(upload: dict[str, Any], base: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": upload["id"], "object": "upload", "bytes": upload["bytes"], "created_at": upload["created_at"],
            "expires_at": upload["expires_at"], "filename": upload["filename"], "purpose": upload["purpose"],
            "mime_type": upload["mime_type"], "sha256sum": upload["sha256"], "status": upload["status"],
            "upload_url": None, "upload_method": None, "upload_headers": None, "file": None}
        if upload["status"] == "pending" and base:
            body.update(upload_url=f"{base}/v1/uploads/{upload['id']}/content", upload_method="PUT",
                        upload_headers={"Content-Type": upload["mime_type"]})
        elif upload["status"] == "completed" and upload["file_id"]:
            record = store.file(upload["file_id"])
            body["file"] = file_object(record) if record else None
        return body

    def live_upload(upload_id: str) -> dict[str, Any]:
        upload = store.upload(upload_id)
        if upload is None:
            fail(404, "upload_not_found", f"Upload {upload_id[:80]} not found")
        if upload["status"] == "pending" and upload["expires_at"] <= time.time():
            store.set_upload(upload_id, status="expired")
            (store.incoming / upload_id).unlink(missing_ok=True)
            fail(404, "upload_not_found", f"Upload {upload_id[:80]} expired")
        return upload

    @router.get("/health", tags=["Health"])
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__,
                "features": {"webhook": False, "output_formats": list(OUTPUT_FORMATS), "sources": SOURCES}}

    @router.get("/tiers", tags=["Tiers"])
    async def list_tiers() -> dict[str, Any]:
        return {"object": "list", "data": tiers.tier_list(ctx.core.config.engine)}

    def model_info() -> dict[str, Any]:
        return {"id": tiers.MODEL_ID, "object": "model", "created": ctx.started, "owned_by": "mineru-fit",
                "description": tiers.MODEL_DESCRIPTION}

    @router.get("/models", tags=["Models"])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_info()]}

    @router.get("/models/{model}", tags=["Models"])
    async def get_model(model: str) -> dict[str, Any]:
        if model != tiers.MODEL_ID:
            fail(404, "model_not_found", f"Model '{model[:80]}' not found")
        return model_info()

    @router.get("/usage", tags=["Usage"])
    async def usage() -> dict[str, Any]:
        counts = await asyncio.to_thread(store.usage)
        config = ctx.core.config
        return {"object": "usage", "access_level": ctx.jobs.access_level,
                "billing_period": {"start": ctx.started_iso, "end": None},
                "current": {k: counts.get(k, 0) for k in ("pages_processed", "files_processed", "jobs_created")},
                "limits": {"max_pages_per_file": config.limits.max_pages,
                           "max_file_size_bytes": config.limits.max_upload_bytes,
                           "max_files_per_job": config.limits.max_files, "max_concurrent_jobs": config.workers,
                           "max_file_retention_days": -(-int(config.retention_s) // 86400) if config.retention_s else None}}

    # --- uploads -----------------------------------------------------------------------------
    @router.post("/uploads", tags=["Uploads"])
    async def create_upload(body: CreateUpload, request: Request) -> JSONResponse:
        limit = ctx.core.config.limits.max_upload_bytes
        if body.bytes > limit:
            fail(413, "file_too_large", f"{body.bytes} bytes is over this server's limit of {limit} per file "
                 "(mineru-fit --max-upload-mb)", param="bytes")
        now = int(time.time())
        upload = {"id": new_id("upload_"), "filename": body.filename, "bytes": body.bytes, "mime_type": body.mime_type,
                  "purpose": body.purpose, "sha256": body.sha256sum, "status": "pending", "created_at": now,
                  "expires_at": now + (body.expires_after.seconds if body.expires_after else UPLOAD_TTL_S), "file_id": None}
        blob = store.blob_path(body.sha256sum) if body.sha256sum else None
        if blob is not None and blob.is_file():  # these bytes are here already: no transfer needed
            if blob.stat().st_size != body.bytes:
                fail(400, "upload_size_mismatch", "Declared size does not match the cached file", param="bytes")
            os.utime(blob)  # in use again: the retention round leaves a fresh blob alone
            record = await asyncio.to_thread(store.add_file, {
                "id": new_id("file-"), "filename": body.filename, "bytes": body.bytes, "created_at": now,
                "expires_at": upload["expires_at"], "purpose": body.purpose, "sha256": body.sha256sum})
            upload.update(status="completed", file_id=record["id"])
        await asyncio.to_thread(store.add_upload, upload)
        return JSONResponse(upload_body(upload, str(request.base_url).rstrip("/")))

    @router.get("/uploads/{upload_id}", tags=["Uploads"])
    async def get_upload(upload_id: str) -> dict[str, Any]:
        return upload_body(live_upload(upload_id))

    @router.put("/uploads/{upload_id}/content", tags=["Uploads"])
    async def upload_content(upload_id: str, request: Request) -> JSONResponse:
        upload = live_upload(upload_id)
        if upload["status"] != "pending":
            fail(409, "upload_already_terminal", f"Upload is {upload['status']}")
        staged = store.incoming / upload_id
        budget = ByteBudget(upload["bytes"])
        try:
            with open(staged, "wb") as out:
                async for chunk in request.stream():
                    budget.take(len(chunk))
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except RequestRefusedError:
            staged.unlink(missing_ok=True)
            fail(413, "upload_size_mismatch", f"Upload expects {upload['bytes']} bytes, received more")
        if budget.used_bytes != upload["bytes"]:
            staged.unlink(missing_ok=True)
            fail(413, "upload_size_mismatch", f"Upload expects {upload['bytes']} bytes, received {budget.used_bytes}")
        return JSONResponse(None, status_code=200)

    @router.post("/uploads/{upload_id}/complete", tags=["Uploads"])
    async def complete_upload(upload_id: str, body: Optional[CompleteUpload] = None) -> dict[str, Any]:
        upload = live_upload(upload_id)
        if upload["status"] != "pending":
            fail(409, "upload_already_terminal", f"Upload is {upload['status']}")
        staged = store.incoming / upload_id
        if not staged.is_file():
            fail(409, "upload_not_ready", "Upload bytes not yet received")
        sha = await asyncio.to_thread(_sha256, staged)
        for declared in (body.sha256sum if body else None, upload["sha256"]):
            if declared and declared != sha:
                fail(400, "file_hash_mismatch", "SHA-256 mismatch")
        await asyncio.to_thread(store.keep_blob, staged, sha)
        record = await asyncio.to_thread(store.add_file, {
            "id": new_id("file-"), "filename": upload["filename"], "bytes": upload["bytes"],
            "created_at": int(time.time()), "expires_at": upload["expires_at"], "purpose": upload["purpose"],
            "sha256": sha})
        await asyncio.to_thread(store.set_upload, upload_id, status="completed", file_id=record["id"], sha256=sha)
        return upload_body(live_upload(upload_id))

    @router.post("/uploads/{upload_id}/cancel", tags=["Uploads"])
    async def cancel_upload(upload_id: str) -> dict[str, Any]:
        upload = live_upload(upload_id)
        if upload["status"] != "pending":
            fail(409, "upload_already_terminal", f"Upload is {upload['status']}")
        await asyncio.to_thread(store.set_upload, upload_id, status="cancelled")
        (store.incoming / upload_id).unlink(missing_ok=True)
        return upload_body(live_upload(upload_id))

    # --- files -------------------------------------------------------------------------------
    def live_file(file_id: str) -> dict[str, Any]:
        record = store.file(file_id)
        if record is None:
            fail(404, "file_not_found", f"File {file_id[:80]} not found")
        return record

    @router.get("/files", tags=["Files"])
    async def list_files(after: Optional[str] = None, limit: int = Query(default=100, ge=1, le=1000),
                         order: Literal["asc", "desc"] = "desc",
                         purpose: Optional[Literal["parse", "parse_output", "input_image"]] = None) -> dict[str, Any]:
        records = await asyncio.to_thread(store.files, purpose)
        if order == "desc":
            records.reverse()
        start = next((i + 1 for i, r in enumerate(records) if r["id"] == after), 0) if after else 0
        page = records[start:start + limit]
        return {"object": "list", "data": [file_object(r) for r in page], "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(records)}

    @router.get("/files/{file_id}", tags=["Files"])
    async def get_file(file_id: str) -> dict[str, Any]:
        return file_object(live_file(file_id))

    @router.get("/files/{file_id}/content", tags=["Files"], response_model=None)
    async def get_file_content(file_id: str) -> FileResponse:
        record = live_file(file_id)
        if record["purpose"] != "parse_output":
            fail(403, "feature_requires_api_key", "Source files cannot be downloaded")
        if not record["path"] or not os.path.isfile(record["path"]):
            fail(404, "file_not_found", f"File {file_id[:80]} is gone (its job was deleted)")
        return FileResponse(record["path"], media_type="application/octet-stream")

    @router.delete("/files/{file_id}", tags=["Files"])
    async def delete_file(file_id: str) -> dict[str, Any]:
        live_file(file_id)
        await asyncio.to_thread(store.delete_file, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    return router


def _sha256(path: Any) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["SOURCES", "build_router"]
