"""The OpenAI chat-completions wire format, as far as MinerU's client and the openai client use it.

Requests ignore unknown fields on purpose: OpenAI-compatible clients send vendor extras
(vLLM's `vllm_xargs`, `priority`, ...) and a server that rejects them breaks MinerU's client.
Responses carry exactly OpenAI's fields.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mineru_fit.engines.builtin import limits as L


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "image_url", "input_text", "input_image"]
    text: Optional[str] = None
    image_url: Optional[Union[ImageUrl, str]] = None

    @property
    def url(self) -> Optional[str]:
        if isinstance(self.image_url, str):
            return self.image_url
        return self.image_url.url if self.image_url else None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None


class ChatRequest(BaseModel):
    # NaN and Infinity (Python's json reads them, and 1e400) slip past every range check.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: Optional[str] = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=L.TOP_K_MIN, le=L.TOP_K_MAX)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    repetition_penalty: Optional[float] = Field(None, ge=L.REPETITION_PENALTY_MIN, le=L.REPETITION_PENALTY_MAX)
    stop: Union[str, list[str], None] = None
    n: int = Field(1, ge=1)
    stream: bool = False
    seed: Optional[int] = Field(None, ge=L.SEED_MIN, le=L.SEED_MAX)
    skip_special_tokens: bool = True
    vllm_xargs: Optional[dict[str, Any]] = None
    no_repeat_ngram_size: Optional[int] = Field(None, ge=0)
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)

    @field_validator("stop")
    @classmethod
    def _few_short_stops(cls, stop: Union[str, list[str], None]) -> Union[str, list[str], None]:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > L.MAX_STOP_STRINGS:
            raise ValueError(f"{len(stops)} stop strings; this server takes at most {L.MAX_STOP_STRINGS} — send fewer")
        chars = sum(len(s) for s in stops)
        if chars > L.MAX_STOP_CHARS:
            raise ValueError(f"the stop strings hold {chars} characters; this server takes at most "
                             f"{L.MAX_STOP_CHARS} in all — send shorter ones")
        return stop

    @field_validator("vllm_xargs")
    @classmethod
    def _whole_ngram_size(cls, xargs: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        value = (xargs or {}).get("no_repeat_ngram_size")
        if value is None:
            return xargs
        try:
            size = int(value)
        except (TypeError, ValueError, OverflowError):
            size = -1
        if size < 0 or size != value and not isinstance(value, str):
            raise ValueError(f"no_repeat_ngram_size must be a whole number ≥ 0, not {value!r}")
        return {**(xargs or {}), "no_repeat_ngram_size": size}

    @property
    def requested_max_tokens(self) -> Optional[int]:
        # MinerU sends both with the same value; the newer name wins when they differ.
        return self.max_completion_tokens or self.max_tokens

    @property
    def ngram_size(self) -> int:
        if self.no_repeat_ngram_size is not None:
            return self.no_repeat_ngram_size
        return int((self.vllm_xargs or {}).get("no_repeat_ngram_size") or 0)  # checked whole and ≥ 0 above

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


# A JSON string with its escapes (so an escaped quote or bracket inside it is skipped whole).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b"[]{},")
_DEPTH_STEP = bytes.maketrans(b"[{]},", b"\x01\x01\xff\xff\x00")


def json_shape(body: bytes) -> tuple[int, int]:
    """(depth, values) of a JSON text: how deep arrays and objects nest and about how many values it
    holds (its commas and brackets), what is inside strings not counted. Linear in the body and all
    at C speed (a body of brackets must not hold the event loop), so it can be asked before a
    recursive parser sees the body or builds an object for every value."""
    import numpy as np  # the engine's dependency (torch's); numpy sums 10 M brackets in milliseconds

    structure = _JSON_STRING.sub(b"", body).translate(None, _NOT_STRUCTURE)
    if not structure:
        return 0, 1
    steps = np.frombuffer(structure.translate(_DEPTH_STEP), dtype=np.int8)
    return int(np.cumsum(steps, dtype=np.int32).max()), len(structure)  # bodies are < 2 GiB


def json_depth(body: bytes) -> int:
    return json_shape(body)[0]


def error_body(message: str, kind: str, code: int, param: Optional[str] = None) -> dict[str, Any]:
    """OpenAI's error shape, which the openai client turns into its exception types."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def completion_body(model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
