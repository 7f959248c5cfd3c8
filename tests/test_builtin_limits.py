"""Token limits: prompt + output never exceed the context; no request gets 'the rest of it'."""

from __future__ import annotations

import pytest

from mineru_fit.engines.builtin.limits import RequestRefused, TokenBudget


def test_request_without_max_tokens_gets_the_planned_cap() -> None:
    budget = TokenBudget(max_model_len=8192, default_new_tokens=6112)
    assert budget.new_tokens_for(prompt_tokens=1400, requested=None) == 6112


def test_max_tokens_is_clamped_to_what_the_context_leaves() -> None:
    budget = TokenBudget(max_model_len=2048, default_new_tokens=647)
    assert budget.new_tokens_for(prompt_tokens=1400, requested=2000) == 648
    assert budget.new_tokens_for(prompt_tokens=1900, requested=None) == 148


def test_max_tokens_beyond_the_context_is_refused() -> None:
    with pytest.raises(RequestRefused) as info:
        TokenBudget(2048, 647).new_tokens_for(prompt_tokens=100, requested=16384)
    assert info.value.status == 400 and "2048" in info.value.message


def test_prompt_longer_than_the_context_is_refused() -> None:
    with pytest.raises(RequestRefused, match="send a smaller image"):
        TokenBudget(2048, 647).new_tokens_for(prompt_tokens=2048, requested=None)
