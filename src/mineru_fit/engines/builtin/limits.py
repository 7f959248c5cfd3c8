"""How many tokens a request may generate: the plan's rules, pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


class RequestRefused(Exception):
    """A request that cannot be served as sent; carries the HTTP status and a clear message."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError", param: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param


@dataclass(frozen=True)
class TokenBudget:
    max_model_len: int
    default_new_tokens: int  # the plan's output cap: what a request without max_tokens gets

    def new_tokens_for(self, prompt_tokens: int, requested: Optional[int]) -> int:
        """Clamp so prompt + output never exceed the context; never 'the rest of the context'."""
        if requested is not None and requested >= self.max_model_len:
            raise RequestRefused(
                400,
                f"max_tokens {requested} does not fit this server's context of {self.max_model_len} tokens "
                f"(--max-model-len) — ask for fewer, at most {self.max_model_len - prompt_tokens}",
                param="max_tokens",
            )
        room = self.max_model_len - prompt_tokens
        if room < 1:
            raise RequestRefused(
                400,
                f"the prompt is {prompt_tokens} tokens (image included) but the context is "
                f"{self.max_model_len} — send a smaller image or start the server with a longer --max-model-len",
                param="messages",
            )
        wanted = requested if requested is not None else self.default_new_tokens
        return max(1, min(wanted, room))
