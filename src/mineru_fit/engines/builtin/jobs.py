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

    @classmethod
    def from_request(cls, *, temperature: Optional[float] = None, top_p: Optional[float] = None,
                     top_k: Optional[int] = None, repetition_penalty: Optional[float] = None,
                     presence_penalty: Optional[float] = None, frequency_penalty: Optional[float] = None,
                     ngram_size: Optional[int] = None, stops: tuple[str, ...] = (),
                     skip_special_tokens: bool = True, ignore_eos: bool = False) -> "SamplingKey":
        """Fill what a request left out the way an OpenAI-compatible server does."""
        return cls(
            temperature=1.0 if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            top_k=top_k if top_k and top_k > 0 else None,
            repetition_penalty=repetition_penalty or 1.0,
            presence_penalty=presence_penalty or 0.0,
            frequency_penalty=frequency_penalty or 0.0,
            ngram_size=max(0, ngram_size or 0),
            stops=stops,
            skip_special_tokens=skip_special_tokens,
            ignore_eos=ignore_eos,
        )


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
    # Set by the HTTP side when the client is gone (disconnect, deleted job); whoever runs the
    # job drops it at the next chance and answers it with CANCELLED_STATUS. Read from the worker
    # thread: a plain attribute is enough (one writer, checked between steps).
    cancelled: bool = False


# nginx's "client closed request": nobody reads this answer, but metrics and logs name it.
CANCELLED_STATUS = 499


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
