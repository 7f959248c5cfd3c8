"""One request on its way through the batcher: what it asks, and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class SamplingKey:
    """Requests batch together only when they sample the same way."""

    temperature: float
    top_p: float
    top_k: Optional[int]
    repetition_penalty: float
    presence_penalty: float
    frequency_penalty: float
    ngram_size: int
    stops: tuple[str, ...]
    skip_special_tokens: bool
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


@dataclass
class Job:
    """A prepared request: its chat turns and images, encoded once at admission."""

    messages: list[dict[str, Any]]      # chat-template form, images as {"type": "image"} parts
    images: list[Any]                   # PIL images, already within the pixel cap
    key: SamplingKey
    max_new_tokens: int
    requested_max_tokens: Optional[int]
    encoded: dict[str, Any] = field(default_factory=dict)  # processor output for this request alone
    prompt_tokens: int = 0
    shrunk: bool = False                # already retried once at a smaller image size
    seed: Optional[int] = None


@dataclass(frozen=True)
class Outcome:
    text: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_status: Optional[int] = None
    error_message: str = ""

    @property
    def ok(self) -> bool:
        return self.error_status is None
