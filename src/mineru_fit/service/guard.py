"""The door of the API, before any body is read: Host and Origin, bearer token, a full queue, the upload size
limit, a body that stops arriving, JSON nested past reason.

Checking here, not in the endpoint, means a client without the token, or one that would be refused
anyway, is answered before it has sent (and we have spooled) a large upload. Every refusal is one JSON
line, as the API's own errors are.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from itertools import accumulate
from typing import Any, Callable, Optional

from starlette.exceptions import HTTPException

from mineru_fit.errors import RequestRefusedError
from mineru_fit.service.hosts import SAFE_METHODS, host_allowed, same_origin
from mineru_fit.units import mib

UPLOAD_PATHS = ("/file_parse", "/tasks", "/v1/file_parse", "/v1/tasks")
OPEN_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
OPEN_PREFIXES = ("/static-offline-docs",)     # the API docs' own scripts and styles (fastapi-offline)
FORM_OVERHEAD_BYTES = 1024 * 1024   # multipart boundaries and the form's small fields
MAX_JSON_BYTES = 256 * 1024         # JSON bodies (the UI's calls, a few KiB) are small; uploads are multipart
MAX_JSON_DEPTH = 64                 # the UI nests a handful of levels; parsers recurse once per level
MAX_HEADER_BYTES = 32 * 1024       # all header names and values together (nginx's default buffers hold 32 KiB)
MAX_HEADERS = 100
MIN_BODY_BYTES_PER_S = 1024         # after the first timeout window, a body must average at least this


def token_matches(header: Optional[str], token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def is_protected(path: str, open_prefixes: tuple[str, ...] = ()) -> bool:
    """Everything needs the token but /health, the API docs and the UI (which asks for it at its own login)."""
    prefixes = (*OPEN_PREFIXES, *open_prefixes)
    return path not in OPEN_PATHS and path != "/" and not any(path == p or path.startswith(p + "/") for p in prefixes)


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')  # linear once escapes are gone: a quote always opens or closes one
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = tuple(1 if b in b"[{" else -1 for b in range(256))


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays/objects deeper than `limit` (brackets inside strings do not count);
    linear, and at C speed: no input makes it backtrack."""
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(None, _NOT_BRACKETS)
    return bool(brackets) and max(accumulate(map(_STEP.__getitem__, brackets))) > limit


class Guard:
    """Pure ASGI middleware."""

    def __init__(self, app: Any, *, token: Optional[str], max_body_bytes: int, capacity: Callable[[], None],
                 open_prefixes: tuple[str, ...] = (), allowed_hosts: Optional[tuple[str, ...]] = None,
                 body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes + FORM_OVERHEAD_BYTES
        self.capacity = capacity
        self.open_prefixes = open_prefixes
        self.allowed_hosts = allowed_hosts
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _answer(send, *refusal, path=scope.get("path", ""))
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit: Optional[int] = None
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
            limit = self.max_body_bytes
        receive = _guarded_body(receive, limit, self.body_timeout_s)
        if _is_json(headers.get("content-type", "")) and scope.get("method") not in SAFE_METHODS:
            try:
                receive = await _checked_json(receive)
            except HTTPException as exc:
                await _answer(send, exc.status_code, str(exc.detail), dict(exc.headers or {}), path)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: dict[str, Any], headers: dict[str, str]) -> Optional[tuple[int, str, dict[str, str]]]:
        """(status, detail, headers) when the request is refused at the door, else None."""
        raw = scope.get("headers", [])
        if len(raw) > MAX_HEADERS or sum(len(k) + len(v) for k, v in raw) > MAX_HEADER_BYTES:
            return 431, (f"the request's headers are too large (at most {MAX_HEADERS} headers, "
                         f"{MAX_HEADER_BYTES // 1024} KiB together)"), {"connection": "close"}
        if not host_allowed(headers.get("host"), self.allowed_hosts):
            return 403, (f"Host {headers.get('host', '')[:100]!r} is not a name of this service — a DNS-rebinding "
                         "page would look like this; add the name with --allowed-host if it is yours"), {}
        method = scope.get("method", "GET")
        origin = headers.get("origin")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        if (method not in SAFE_METHODS or scope["type"] == "websocket") and origin is not None \
                and not same_origin(origin, headers.get("host", ""), scheme):
            return 403, (f"a cross-origin {method} from {origin[:100]!r} is refused: a web page may not submit to or "
                         "delete from this service — call it from a program (no Origin header) or from its own UI"), {}
        if self.token and is_protected(scope.get("path", ""), self.open_prefixes) and \
                not token_matches(headers.get("authorization"), self.token):
            return 401, ("a bearer token is required: send `Authorization: Bearer <token>` "
                         "(the service's MINERU_FIT_API_TOKEN)"), {"www-authenticate": "Bearer"}
        return None


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _too_large(limit: int) -> str:
    return (f"the upload is larger than this service's limit of {mib(limit - FORM_OVERHEAD_BYTES)} per request — "
            "send fewer or smaller files (the limit is --max-upload-mb)")


def _guarded_body(receive: Any, limit: Optional[int], timeout_s: float) -> Any:
    """A receive() that stops a body growing past `limit` (e.g. chunked, without Content-Length) and one that
    stops arriving: nothing for `timeout_s`, or under MIN_BODY_BYTES_PER_S on average after that.

    Both raise an HTTPException, which passes through FastAPI's body parsing unchanged and is answered
    with its status; `connection: close` drops the rest of the body with the connection.
    """
    seen = 0
    started = time.monotonic()
    body_done = False

    async def wrapped() -> Any:
        nonlocal seen, body_done
        if body_done:  # after the body, receive() waits for the client to leave: no timeout there
            return await receive()
        # Each byte received buys 1/MIN_BODY_BYTES_PER_S of time beyond the first window, so a body that
        # drips a byte at a time runs out as surely as one that stops.
        left = started + timeout_s + seen / MIN_BODY_BYTES_PER_S - time.monotonic()
        try:
            if left <= 0:
                raise asyncio.TimeoutError
            message = await asyncio.wait_for(receive(), min(timeout_s, left))
        except asyncio.TimeoutError:
            raise HTTPException(408, f"the request body sent nothing for {timeout_s:g} s, or arrived slower than "
                                     f"{MIN_BODY_BYTES_PER_S} bytes/s — send it whole, at once",
                                headers={"connection": "close"}) from None
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if limit is not None and seen > limit:
                raise HTTPException(413, _too_large(limit), headers={"connection": "close"})
        else:
            body_done = True
        return message

    return wrapped


async def _checked_json(receive: Any) -> Any:
    """Read a JSON body whole (at most MAX_JSON_BYTES), refuse it when nested past MAX_JSON_DEPTH — every JSON
    parser behind us (ours, Gradio's) recurses per level — and hand it on as one message."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            return _replay(message)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise HTTPException(413, f"a JSON body over {mib(MAX_JSON_BYTES)} — this service takes none that large",
                                headers={"connection": "close"})
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if await asyncio.to_thread(json_too_deep, body) if size > 16384 else json_too_deep(body):
        raise HTTPException(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels — send a flatter document")
    return _replay({"type": "http.request", "body": body, "more_body": False}, receive)


def _replay(first: dict[str, Any], then: Any = None) -> Any:
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await then() if then is not None else {"type": "http.disconnect"}

    return replay


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
