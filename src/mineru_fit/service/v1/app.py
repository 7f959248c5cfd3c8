"""Mount /v1 on the service's app: its routes and MinerU 4's error body for everything under /v1."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from mineru_fit.service.core import ServiceCore
from mineru_fit.service.v1 import errors, parse, resources, retention
from mineru_fit.service.v1.context import V1Context

# MinerU 4 serves these without a token (its router and clients probe them first).
OPEN_PATHS = ("/v1/health", "/v1/tiers", "/v1/models")


def _is_v1(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def mount_v1(app: FastAPI, core: ServiceCore) -> V1Context:
    """Add the /v1 routes over `core` to `app` (the 2.x routes keep their own error body)."""
    ctx = V1Context(core)
    core.sweepers.append(lambda cutoff: retention.sweep(ctx.store, ctx.core_jobs, cutoff))
    core.closers.append(ctx.close)  # the /v1 store's connection ends with the service, not with the process
    app.include_router(resources.build_router(ctx))
    app.include_router(parse.build_router(ctx))
    app.add_exception_handler(errors.V1Error, lambda _r, exc: errors.response(exc))  # type: ignore[arg-type]

    async def validation(request: Request, exc: Any) -> Any:
        if not _is_v1(request):
            return await request_validation_exception_handler(request, exc)
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")) or None
        message = f"Invalid request: {param}: {first.get('msg')}" if param else f"Invalid request: {first.get('msg')}"
        return errors.response(errors.V1Error(400, "invalid_request", message, param=param))

    async def http_error(request: Request, exc: Any) -> Any:
        if not _is_v1(request):
            return await http_exception_handler(request, exc)
        # (a 413 here is the Guard stopping a body sent without Content-Length once it passes the limit)
        code = "not_found" if exc.status_code == 404 else errors.code_for(exc.status_code)
        return errors.response(errors.V1Error(exc.status_code, code, str(exc.detail)))

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http_error)
    return ctx
