"""The OpenAI chat-completions wire format, as far as MinerU's client and the openai client use it.

Requests ignore unknown fields on purpose: OpenAI-compatible clients send vendor extras
(vLLM's `vllm_xargs`, `priority`, ...) and a server that rejects them breaks MinerU's client.
Responses carry exactly OpenAI's fields.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


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
    model_config = ConfigDict(extra="ignore")

    model: Optional[str] = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    repetition_penalty: Optional[float] = Field(None, gt=0)
    stop: Union[str, list[str], None] = None
    n: int = Field(1, ge=1)
    stream: bool = False
    seed: Optional[int] = None
    skip_special_tokens: bool = True
    vllm_xargs: Optional[dict[str, Any]] = None
    no_repeat_ngram_size: Optional[int] = Field(None, ge=0)
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)

    @property
    def requested_max_tokens(self) -> Optional[int]:
        # MinerU sends both with the same value; the newer name wins when they differ.
        return self.max_completion_tokens or self.max_tokens

    @property
    def ngram_size(self) -> int:
        if self.no_repeat_ngram_size is not None:
            return self.no_repeat_ngram_size
        value = (self.vllm_xargs or {}).get("no_repeat_ngram_size")
        try:
            return max(0, int(value)) if value is not None else 0
        except (TypeError, ValueError):
            return 0

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


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
