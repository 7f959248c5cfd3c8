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


def test_per_request_limits_follow_from_the_plan() -> None:
    from mineru_fit.engines.builtin.limits import MAX_INPUT_DOWNSCALE, RequestLimits

    small = RequestLimits.from_plan(max_model_len=2048, max_image_pixels=700_000, max_batch_size=4)
    large = RequestLimits.from_plan(max_model_len=8192, max_image_pixels=1_605_632, max_batch_size=8)
    assert small.max_images == large.max_images == 1  # the plan sizes every batch for one image per request
    assert large.max_input_pixels == 1_605_632 * MAX_INPUT_DOWNSCALE**2
    # A short context still takes the largest page the parse side renders (an A2 poster at 200 DPI)...
    assert small.max_input_pixels >= 4677 * 6614
    # ... but not the 16000×16000 PNG, whose decoding alone cost 0.7 GB.
    assert large.max_input_pixels < 16000 * 16000
    assert large.max_prompt_chars > small.max_prompt_chars >= 2048
    assert small.max_body_bytes < large.max_body_bytes < 128 * 2**20
    assert (small.max_admitted, large.max_admitted) == (8, 16)
    pinned = RequestLimits.from_plan(max_model_len=2048, max_image_pixels=700_000, max_batch_size=4,
                                     max_input_pixels=50_000_000)
    assert pinned.max_input_pixels == 50_000_000


@pytest.mark.parametrize("body, depth", [
    (b"{}", 1), (b"1", 0), (b'{"a": [[1, {"b": 2}]]}', 4),
    (b'{"a": "[[[[\\"[[{{", "b": [1]}', 2),  # brackets (and an escaped quote) inside a string do not count
    (b"[" * 100_000 + b"]" * 100_000, 100_000),
])
def test_json_depth_counts_only_real_nesting(body: bytes, depth: int) -> None:
    from mineru_fit.engines.builtin.protocol import json_depth

    assert json_depth(body) == depth


def test_json_shape_counts_values_outside_strings() -> None:
    from mineru_fit.engines.builtin.protocol import json_shape

    assert json_shape(b'{"a": "[1, 2, 3]"}')[1] < json_shape(b'{"a": [1, 2, 3]}')[1]
    assert json_shape(b"[" + b"0," * 10_000 + b"0]")[1] > 10_000
