"""Choosing each row's next token, row by row: rows in one step may sample differently.

What an OpenAI-compatible server offers and transformers' processors do not do per row:
presence/frequency penalties (OpenAI semantics, output only), MinerU's no-repeat n-grams over
the output only, and a random generator per row, so a request's seed gives the same tokens
whether it runs alone or next to others.
"""

from __future__ import annotations

from typing import Optional

import torch

from mineru_fit.engines.builtin.jobs import SamplingKey


def presence_frequency(scores: torch.Tensor, output: list[int], presence: float, frequency: float) -> torch.Tensor:
    """Subtract presence once per seen token and frequency per occurrence (one row's scores)."""
    if not output:
        return scores
    counts = torch.zeros_like(scores)
    ids = torch.tensor(output, device=scores.device)
    counts.scatter_add_(0, ids, torch.ones_like(ids, dtype=scores.dtype))
    return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)


def repetition(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' repetition penalty over prompt and output: shrink the logit of every seen token."""
    picked = scores.gather(0, seen)
    scores.scatter_(0, seen, torch.where(picked < 0, picked * penalty, picked / penalty))
    return scores


class NgramBan:
    """Tokens that would repeat an n-gram already in the row's output (not its prompt), as MinerU's
    vLLM logits processor does; incremental, so each step costs O(1)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: dict[tuple[int, ...], set[int]] = {}
        self.indexed = 0  # output positions already entered into `seen`

    def banned(self, output: list[int]) -> set[int]:
        n = self.n
        if n <= 0 or len(output) < n:
            return set()
        for end in range(max(self.indexed, n), len(output) + 1):
            self.seen.setdefault(tuple(output[end - n:end - 1]), set()).add(output[end - 1])
        self.indexed = len(output) + 1
        return self.seen.get(tuple(output[len(output) - n + 1:]), set())


def warp(scores: torch.Tensor, key: SamplingKey) -> torch.Tensor:
    """Temperature, top-k, top-p (transformers' order) on one row's scores."""
    scores = scores / key.temperature
    if key.top_k:
        k = min(key.top_k, scores.shape[-1])
        cutoff = torch.topk(scores, k).values[-1]
        scores = scores.masked_fill(scores < cutoff, -float("inf"))
    if key.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        mass = ordered.softmax(-1).cumsum(-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = mass - ordered.softmax(-1) >= key.top_p
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), -float("inf"))
    return scores


class RowSampler:
    """Everything that picks one row's tokens: its key, prompt, penalties state and generator."""

    def __init__(self, key: SamplingKey, prompt_ids: torch.Tensor, eos_ids: tuple[int, ...],
                 seed: Optional[int], device: torch.device) -> None:
        self.key = key
        self.prompt_ids = prompt_ids.to(device)
        self.eos = torch.tensor(eos_ids, device=device) if eos_ids else None
        self.ngrams = NgramBan(key.ngram_size)
        self.generator: Optional[torch.Generator] = None
        if not key.greedy:
            self.generator = torch.Generator(device=device)
            if seed is not None:
                self.generator.manual_seed(seed)
            else:
                self.generator.seed()

    def next_token(self, scores: torch.Tensor, output: list[int]) -> int:
        """The next token for this row from its last-position logits (1-D, float)."""
        key = self.key
        scores = scores.float()
        if key.repetition_penalty != 1.0:
            seen = self.prompt_ids if not output else torch.cat(
                [self.prompt_ids, torch.tensor(output, device=scores.device)])
            scores = repetition(scores, seen, key.repetition_penalty)
        if key.presence_penalty or key.frequency_penalty:
            scores = presence_frequency(scores, output, key.presence_penalty, key.frequency_penalty)
        banned = self.ngrams.banned(output)
        if banned:
            scores[list(banned)] = -float("inf")
        if key.ignore_eos and self.eos is not None:
            scores[self.eos] = -float("inf")
        if key.greedy:
            return int(scores.argmax())
        probs = warp(scores, key).softmax(-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
