"""Per-row generation controls transformers' generate lacks: OpenAI penalties, MinerU's
no-repeat n-grams over the output only, and a max_tokens per row."""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria


class OutputOnly:
    """The generated part of each row: input_ids minus the (left-padded) prompt width."""

    def __init__(self, prompt_width: int) -> None:
        self.prompt_width = prompt_width

    def generated(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        return input_ids[:, self.prompt_width:]


class PresenceFrequencyPenalty(LogitsProcessor, OutputOnly):
    """OpenAI semantics: subtract presence once per seen token and frequency per occurrence."""

    def __init__(self, prompt_width: int, presence: float, frequency: float) -> None:
        OutputOnly.__init__(self, prompt_width)
        self.presence = presence
        self.frequency = frequency

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = self.generated(input_ids)
        if out.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores)
        counts.scatter_add_(1, out, torch.ones_like(out, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class NoRepeatNgramOnOutput(LogitsProcessor, OutputOnly):
    """Ban a token that would repeat an n-gram already in the row's output (not its prompt),
    as MinerU's vLLM logits processor does; incremental, so each step costs O(1) per row."""

    def __init__(self, prompt_width: int, ngram_size: int, batch_size: int) -> None:
        OutputOnly.__init__(self, prompt_width)
        self.n = ngram_size
        self.seen: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(batch_size)]
        self.indexed = [0] * batch_size  # output positions already entered into `seen`

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = self.generated(input_ids).tolist()
        n = self.n
        for row, tokens in enumerate(out):
            if len(tokens) < n:
                continue
            seen = self.seen[row]
            # Enter every n-gram completed since the last step.
            for end in range(max(self.indexed[row], n), len(tokens) + 1):
                seen.setdefault(tuple(tokens[end - n:end - 1]), set()).add(tokens[end - 1])
            self.indexed[row] = len(tokens) + 1
            banned = seen.get(tuple(tokens[len(tokens) - n + 1:]), ())
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


class PerRowMaxNewTokens(StoppingCriteria, OutputOnly):
    """Stop each row at its own max_tokens; generate's max_new_tokens is the batch's largest."""

    def __init__(self, prompt_width: int, limits: list[int]) -> None:
        OutputOnly.__init__(self, prompt_width)
        self.limits = limits

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        produced = input_ids.shape[1] - self.prompt_width
        limits = torch.tensor(self.limits, device=input_ids.device)
        return limits <= produced
