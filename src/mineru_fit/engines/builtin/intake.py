"""What comes in at the built-in engine's door: the body read against the plan's size, parsed
without recursion or object swarms, checked against the plan's per-request limits before any
image is decoded or any text tokenized; and whether the client is still there."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from mineru_fit.engines.builtin.limits import MAX_JSON_DEPTH, RequestLimits, RequestRefused
from mineru_fit.engines.builtin.protocol import ChatRequest, json_shape


def retrieve(future: "asyncio.Future[Any]") -> None:
    """Collect the outcome of a request whose client left (a done-callback)."""
    if not future.cancelled():
        future.exception()  # an answer nobody reads must not be logged as 'never retrieved'


async def answered_before_client_left(request: Request, answer: "asyncio.Future[Any]") -> bool:
    """Wait for `answer`; False as soon as the client disconnects first."""
    async def client_gone() -> None:
        # Once the body is read, the next ASGI message a request gets is its disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({answer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    return answer.done()


async def read_body(request: Request, limits: RequestLimits) -> bytes:
    """The body, refused with 413 as soon as it passes the largest request the plan serves (from
    Content-Length before reading any of it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise RequestRefused(413, _too_large(int(declared), limits), kind="RequestTooLarge")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise RequestRefused(413, _too_large(size, limits), kind="RequestTooLarge")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limits: RequestLimits) -> str:
    return (f"the request body is over {size / 2**20:.1f} MiB; this server takes at most "
            f"{limits.max_body_bytes / 2**20:.1f} MiB (one image of at most {limits.max_input_pixels / 1e6:.1f} MP "
            f"and {limits.max_prompt_chars} characters of text) — send a smaller image or less text")


def _not_a_number(name: str) -> float:
    raise RequestRefused(400, f"{name} is not a JSON number — send a finite number")


def parse_request(body: bytes, limits: RequestLimits) -> ChatRequest:
    # Python's parser recurses once per level and builds an object per value: refuse deep nesting
    # and swarms of values before it sees the body.
    depth, values = json_shape(body)
    if depth > MAX_JSON_DEPTH:
        raise RequestRefused(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels — send a flatter body")
    if values > limits.max_json_values:
        raise RequestRefused(400, f"the JSON body holds about {values} values; this server's context takes at most "
                                  f"{limits.max_json_values} — send fewer messages or content parts")
    try:
        data = json.loads(body, parse_constant=_not_a_number)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise RequestRefused(400, f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RequestRefused(400, "the request body must be a JSON object")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        # In a union (content: text or parts) the deepest error names the field the client got wrong.
        err = max(exc.errors(), key=lambda e: len(e.get("loc", ())))
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = str(err.get("msg", "")).removeprefix("Value error, ")
        raise RequestRefused(400, f"{where}: {message}", param=where or None) from exc


def check_shape(req: ChatRequest, text_chars: int, images: int, limits: RequestLimits, context: int) -> None:
    """Refuse what the plan cannot hold, before decoding or tokenizing anything."""
    if images > limits.max_images:
        raise RequestRefused(400, f"the request has {images} images; this server's plan holds {limits.max_images} "
                                  "image per request — send each image in its own request", param="messages")
    if len(req.messages) > limits.max_messages:
        raise RequestRefused(400, f"{len(req.messages)} messages cannot fit this server's context of {context} tokens "
                                  f"(at most {limits.max_messages}) — send fewer messages", param="messages")
    if text_chars > limits.max_prompt_chars:
        raise RequestRefused(400, f"the messages hold {text_chars} characters of text; this server's context of "
                                  f"{context} tokens holds at most {limits.max_prompt_chars} — send less text",
                             param="messages")
    if req.ngram_size > limits.max_ngram_size:
        raise RequestRefused(400, f"no_repeat_ngram_size {req.ngram_size} is longer than this server's context of "
                                  f"{context} tokens — use a smaller one", param="no_repeat_ngram_size")
