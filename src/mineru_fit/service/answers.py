"""How failures become answers: always one JSON body, never the client's input echoed, never a traceback.

FastAPI's own 422 repeats each invalid value (`input`), which for a form is the whole upload or a
secret pasted in a field; Starlette's last resort is a plain-text 500. Here a 422 names the field and
the rule, bad nesting is the client's 400, and anything unforeseen is a JSON 500 whose details go to the
service's log only.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mineru_fit.service.store import StoreError

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 300


def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [{"type": str(error.get("type", "")), "loc": [str(part)[:100] for part in error.get("loc", ())],
               "msg": str(error.get("msg", ""))[:MAX_MESSAGE_CHARS]} for error in exc.errors()[:20]]
    return JSONResponse({"detail": detail}, status_code=422)


def _too_deep(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "the request nests too deeply to be read — send a flatter body"}, status_code=400)


def _disk(request: Request, exc: Exception) -> JSONResponse:
    """Our own disk failed under a request (a read-only data dir, a zip that cannot be written)."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    logger.error("%s %s: the data dir failed: %s", request.method, request.url.path, reason)
    return JSONResponse({"detail": f"the service cannot use its disk now ({reason}) — retry later"}, status_code=503,
                        headers={"retry-after": "10"})


def _internal(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return JSONResponse({"detail": "the service failed on this request (its log has the details) — retry, "
                                   "and report it if it persists"}, status_code=500)


def install(app: FastAPI) -> None:
    """Register these answers on `app`."""
    handlers: list[tuple[Any, Any]] = [(RequestValidationError, _invalid), (RecursionError, _too_deep),
                                       (StoreError, _disk), (OSError, _disk), (Exception, _internal)]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)
