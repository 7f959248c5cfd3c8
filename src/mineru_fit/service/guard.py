"""The door of the API, before any body is read: bearer token, a full queue, the upload size limit.

Checking here, not in the endpoint, means a client without the token, or one that would be
refused anyway, is answered before it has sent (and we have spooled) a large upload.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable, Optional

from starlette.exceptions import HTTPException

from mineru_fit.errors import RequestRefusedError
from mineru_fit.units import mib

UPLOAD_PATHS = ("/file_parse", "/tasks", "/v1/file_parse", "/v1/tasks")
OPEN_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
FORM_OVERHEAD_BYTES = 1024 * 1024   # multipart boundaries and the form's small fields


def token_matches(header: Optional[str], token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def is_protected(path: str, open_prefixes: tuple[str, ...] = ()) -> bool:
    """Everything needs the token but /health, the API docs and the UI (which asks for it at its own login)."""
    return path not in OPEN_PATHS and path != "/" and not any(path == p or path.startswith(p + "/") for p in open_prefixes)


class Guard:
    """Pure ASGI middleware."""

    def __init__(self, app: Any, *, token: Optional[str], max_body_bytes: int, capacity: Callable[[], None],
                 open_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes + FORM_OVERHEAD_BYTES
        self.capacity = capacity
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token and is_protected(path, self.open_prefixes) and not token_matches(headers.get("authorization"), self.token):
            await _answer(send, 401, "a bearer token is required: send `Authorization: Bearer <token>` "
                                     "(the service's MINERU_FIT_API_TOKEN)", {"www-authenticate": "Bearer"}, path)
            return
        if scope.get("method") == "POST" and path in UPLOAD_PATHS:
            try:
                self.capacity()
            except RequestRefusedError as exc:
                await _answer(send, exc.status, str(exc), {"retry-after": str(exc.retry_after_s or 5)}, path)
                return
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_body_bytes:
                await _answer(send, 413, _too_large(self.max_body_bytes), {"connection": "close"}, path)
                return
            receive = _limited(receive, self.max_body_bytes)
        await self.app(scope, receive, send)


def _too_large(limit: int) -> str:
    return (f"the upload is larger than this service's limit of {mib(limit - FORM_OVERHEAD_BYTES)} per request — "
            "send fewer or smaller files (the limit is --max-upload-mb)")


def _limited(receive: Any, limit: int) -> Any:
    """A receive() that stops a body (e.g. chunked, without Content-Length) growing past `limit`."""
    seen = 0

    async def wrapped() -> Any:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # An HTTPException passes through FastAPI's body parsing unchanged and is answered as 413.
                raise HTTPException(413, _too_large(limit))
        return message

    return wrapped


# MinerU 4's error body for its /v1 routes (its clients read error.code and error.message).
_V1_ERRORS = {401: ("authentication_error", "invalid_api_key"), 413: ("invalid_request_error", "file_too_large"),
              503: ("engine_error", "server_busy")}


async def _answer(send: Any, status: int, detail: str, extra: dict[str, str], path: str = "") -> None:
    if path.startswith("/v1/"):
        kind, code = _V1_ERRORS.get(status, ("invalid_request_error", "invalid_request"))
        body = json.dumps({"error": {"type": kind, "code": code, "message": detail, "param": None}}).encode("utf-8")
    else:
        body = json.dumps({"detail": detail}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
