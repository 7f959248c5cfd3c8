"""The planner's terms against the model's known numbers."""

from __future__ import annotations

import pytest

from mineru_fit.models import default_spec
from mineru_fit.planner import Hardware, PlanRequest, plan_levels
from mineru_fit.planner import terms as T
from mineru_fit.planner.levels import Quant
from mineru_fit.planner.workload import split_context
from mineru_fit.units import GIB


@pytest.fixture(scope="module")
def spec():
    return default_spec()


def test_bf16_weights_match_the_real_checkpoint_within_one_percent(spec):
    # vLLM's public log for this model: "Model loading took 2.16 GiB".
    weights = T.weights_bytes(spec, "bfloat16", Quant.none, quantize_vision=True)
    assert abs(weights / GIB - 2.16) / 2.16 < 0.01


def test_kv_bytes_per_token(spec):
    assert T.kv_bytes_per_token(spec, 2) == 12288
    assert T.kv_bytes_per_token(spec, 1) == 6144
    # Two KV heads: tp 2 halves the per-GPU cache, tp 7 cannot split further (heads replicate).
    assert T.kv_bytes_per_token(spec, 2, tp_size=2) == 6144
    assert T.kv_bytes_per_token(spec, 2, tp_size=7) == 6144


def test_quantized_weights_shrink_in_order(spec):
    bf16 = T.weights_bytes(spec, "bfloat16", Quant.none, quantize_vision=True)
    int8 = T.weights_bytes(spec, "bfloat16", Quant.int8, quantize_vision=True)
    nf4 = T.weights_bytes(spec, "bfloat16", Quant.nf4, quantize_vision=True)
    nf4_no_dq = T.weights_bytes(spec, "bfloat16", Quant.nf4, quantize_vision=True, double_quant=False)
    assert bf16 > int8 > nf4_no_dq > nf4
    # The embedding (136M params) stays 16-bit: 4-bit weights cannot drop below it.
    embedding = spec.text.vocab_size * spec.text.hidden_size * 2
    assert nf4 > embedding
    # NF4 with double quant stores about 0.516 bytes per quantized weight.
    linear = sum(t.numel for t in spec.tensors if t.role.value in ("linear", "vision_linear"))
    assert (nf4 - (bf16 - 2 * linear)) / linear == pytest.approx(0.516, abs=0.005)


def test_layout_page_is_1369_tokens_and_every_request_fits_the_context(spec):
    for max_len in (1800, 2048, 4096, 8192, 16384, 32768):
        split = split_context(spec, max_len)
        assert split.layout_image_tokens == 1369
        assert split.max_image_pixels <= spec.image.max_pixels
        for image_tokens in (split.layout_image_tokens, split.content_image_tokens):
            assert image_tokens + 32 + split.max_new_tokens <= max_len


def test_short_context_lowers_pixel_cap_and_output_cap_together(spec):
    long, short = split_context(spec, 16384), split_context(spec, 2048)
    assert short.max_image_pixels < long.max_image_pixels
    assert short.max_new_tokens < long.max_new_tokens
    assert long.max_image_pixels == spec.image.max_pixels  # 1605632: the processor's own cap


def test_a_short_context_shrinks_the_layout_page_down_to_one_requests_minimum(spec):
    from mineru_fit.errors import PlanInputError
    from mineru_fit.planner.workload import full_layout_model_len, min_model_len

    assert (min_model_len(spec), full_layout_model_len(spec)) == (352, 1657)
    previous = None
    for max_len in range(352, 4097, 7):
        split = split_context(spec, max_len)
        # Every image, the layout page included, is capped at max_image_pixels by the engines.
        assert split.layout_image_tokens <= split.content_image_tokens == split.max_image_pixels // 784
        assert split.content_image_tokens + 32 + split.max_new_tokens == max_len
        assert split.max_new_tokens >= 256 and split.layout_side_px % 28 == 0
        assert split.layout_shrunk == (max_len < 1657) == (split.degradation() is not None)
        if previous is not None:  # a longer context never reads a smaller page
            assert split.layout_side_px >= previous.layout_side_px
        previous = split
    short = split_context(spec, 1024)
    assert (short.layout_side_px, short.max_new_tokens, short.max_image_pixels) == (756, 256, 736 * 784)
    assert split_context(spec, 352).layout_side_px == 224  # the processor's smallest image: 8×8 tokens
    with pytest.raises(PlanInputError, match="use at least 352"):
        split_context(spec, 351)


def test_terms_sum_to_the_predicted_peak(spec):
    for engine in ("builtin", "sglang", "vllm"):
        for plan in plan_levels(spec, Hardware.from_vram(16), PlanRequest(engine=engine)):
            assert sum(plan.terms.values()) == plan.predicted_peak_bytes
            assert set(plan.terms) >= {"weights", "kv_cache", "activations", "cuda_graphs", "runtime", "margin"}
