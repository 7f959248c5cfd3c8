"""The engines' version-aware rules, checked against what their own logs and sources print."""

from __future__ import annotations

from pathlib import Path

import pytest

from mineru_fit.errors import ModelSpecError
from mineru_fit.models import default_spec
from mineru_fit.models.config import parse_config, read_config
from mineru_fit.models.derive import derive_tensors
from mineru_fit.models.spec import TensorRole
from mineru_fit.planner.engine_memory import (
    caching_allocator_reserved_bytes, engine_parameter_allocations, image_grid_tokens, sglang_default_fraction,
    sglang_memory, sglang_vlm_fraction, sglang_weight_bytes, vllm_memory, vllm_profile_encoder_tokens,
)
from mineru_fit.planner.engine_versions import parse_version, post_release, sglang_rules, vllm_rules
from mineru_fit.planner.levels import Quant
from mineru_fit.units import GIB

LOGS = Path(__file__).parent / "data" / "engine_logs" / "models"


@pytest.fixture(scope="module")
def mineru():
    return default_spec()


@pytest.fixture(scope="module")
def qwen25_7b():
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import planner_vs_logs as bench
    record = next(r for r in bench.load_records() if r.id.startswith("v04"))
    return bench.spec_for(record)


def test_versions_parse_with_suffixes():
    assert parse_version("0.10.1.1") == (0, 10, 1, 1)
    assert parse_version("v0.8.5.post1") == (0, 8, 5)
    assert parse_version("0.11.0+cu129") == (0, 11, 0)
    with pytest.raises(ValueError):
        parse_version("latest")


def test_largest_image_is_the_largest_square_under_max_pixels(mineru, qwen25_7b):
    # MinerU2.5's 1605632 px cap gives 1260×1260 = 45×45 tokens; Qwen2.5-VL's 12845056 gives 128×128.
    assert image_grid_tokens(mineru, mineru.image.max_pixels) == 2025
    assert image_grid_tokens(qwen25_7b, qwen25_7b.image.max_pixels) == 16384


def test_vllm_profiles_the_video_the_logs_report(mineru, qwen25_7b):
    # "Encoder cache will be initialized with a budget of 14175 tokens, and profiled with 1 video
    # items" (MinerU2.5, vLLM 0.10.1.1, max model len 16384): 7 frame pairs of 2025 tokens.
    tokens = vllm_profile_encoder_tokens(mineru, vllm_rules("0.10.1.1"), 16384, mineru.image.max_pixels,
                                         True, 2048, 256)
    assert tokens == 14175
    # "... a budget of 114688 tokens, and profiled with 1 video items" (Qwen2.5-VL-7B, 0.23.0, 128000).
    tokens = vllm_profile_encoder_tokens(qwen25_7b, vllm_rules("0.23.0"), 128000, qwen25_7b.image.max_pixels,
                                         True, 2048, 256)
    assert tokens == 114688
    # The plan's own command allows no video: one page-sized image instead, 7× fewer tokens.
    assert vllm_profile_encoder_tokens(mineru, vllm_rules("0.26.0"), 16384, mineru.image.max_pixels,
                                       False, 2048, 256) == 2025


def test_vllm_graphs_enter_the_budget_from_0_21(mineru):
    kwargs = dict(total_bytes=24 * GIB, utilization=0.5, max_model_len=8192, max_num_batched_tokens=2048,
                  max_num_seqs=256, max_pixels=mineru.image.max_pixels, video_profiled=False)
    before = vllm_memory(mineru, vllm_rules("0.20.0"), **kwargs)
    after = vllm_memory(mineru, vllm_rules("0.21.0"), **kwargs)
    assert not before.graphs_in_budget and after.graphs_in_budget
    assert before.kv_cache - after.kv_cache == after.cuda_graphs > 0


def test_vllm_weights_include_the_mrope_cache(mineru):
    # vLLM's "Model loading took 2.1641 GiB" for MinerU2.5: the bf16 tensors plus a cos/sin cache
    # of 4 × 32768 positions × 64.
    mem = vllm_memory(mineru, vllm_rules("0.10.1.1"), total_bytes=8 * GIB, utilization=0.25, max_model_len=16384,
                      max_num_batched_tokens=2048, max_num_seqs=256, max_pixels=mineru.image.max_pixels,
                      video_profiled=True)
    assert mem.weights - mineru.weight_bytes == 4 * 32768 * 64 * 2
    assert abs(mem.weights / GIB - 2.1641) / 2.1641 < 0.005
    assert not mem.starts  # 0.25 × 8 GiB cannot hold 2.16 GiB of weights and the profile


def test_sglang_default_fraction_per_version():
    # 0.4.6/0.4.7: 0.88 at TP 1 on cards up to 80 GiB.
    assert sglang_default_fraction(sglang_rules("0.4.6.post5"), 24564) == 0.88
    # 0.4.8–0.5.2: (gpu − (2.8 + tp/10) GiB) / gpu on cards under 35 GiB.
    assert sglang_default_fraction(sglang_rules("0.4.9"), 24564) == round((24564 - 2.9 * 1024) / 24564, 3)
    # From 0.5.3: 512 MiB + 1.5 MiB × chunk + 2 MiB × graph batch + tp/8 GiB, 10 GiB at least above 60 GiB.
    assert sglang_default_fraction(sglang_rules("0.5.5"), 24564) == round((24564 - (512 + 3072 + 48 + 128)) / 24564, 3)
    assert sglang_default_fraction(sglang_rules("0.5.5"), 81559) == round((81559 - 13440) / 81559, 3)


def test_sglang_shrinks_a_vlm_fraction_where_each_release_does(qwen25_7b):
    # SGLang's docs CI logged, for Qwen2.5-VL-7B on one H100 (tests/data/engine_logs/s03–s06):
    # 0.4.7  "mem_fraction_static=0.88" then "Automatically reduce --mem-fraction-static to 0.792"
    # 0.4.8  "mem_fraction_static=0.874" then "... to 0.787" (ModelRunner, × 0.90)
    # 0.4.9.post2  "mem_fraction_static=0.7866" (server_args, default × 0.90)
    # 0.4.9.post6  "Dynamically adjusted --mem-fraction-static from: 0.874 to: 0.784" (ViT-scaled)
    assert post_release("0.4.9.post3") == 3 and post_release("0.4.9") == 0
    assert [sglang_rules(v).vlm_reduction for v in ("0.4.8", "0.4.9", "0.4.9.post2", "0.4.9.post3", "0.5.5")] == [
        "model_runner_0_9", "default_0_9", "default_0_9", "vit_scaled_default", "vit_scaled_default"]
    assert sglang_vlm_fraction(sglang_rules("0.4.7"), 0.88, False, qwen25_7b) == pytest.approx(0.792)
    assert sglang_vlm_fraction(sglang_rules("0.4.9.post2"), 0.874, False, qwen25_7b) == pytest.approx(0.7866)
    assert sglang_vlm_fraction(sglang_rules("0.4.9.post2"), 0.5, True, qwen25_7b) == 0.5
    assert sglang_vlm_fraction(sglang_rules("0.4.9.post6"), 0.874, False, qwen25_7b) == pytest.approx(0.7835956249999999)
    assert sglang_vlm_fraction(sglang_rules("0.4.9.post6"), 0.874, False, qwen25_7b, multimodal=False) == 0.874


def test_caching_allocator_rounds_like_pytorch():
    MIB = 1 << 20
    assert caching_allocator_reserved_bytes([100]) == 2 * MIB              # small: a 2 MiB segment
    assert caching_allocator_reserved_bytes([100 * 1024] * 20) == 2 * MIB  # ... shared by 20 small tensors
    assert caching_allocator_reserved_bytes([3 * MIB]) == 20 * MIB        # 1–10 MiB: a 20 MiB segment
    assert caching_allocator_reserved_bytes([3 * MIB] * 6) == 20 * MIB    # ... split among them
    assert caching_allocator_reserved_bytes([int(24.5 * MIB)]) == 26 * MIB  # ≥ 10 MiB: rounded to 2 MiB
    # The 1.5 MiB left of that segment is split off and reused; 1 MiB left is not (> 1 MiB to split).
    assert caching_allocator_reserved_bytes([int(24.5 * MIB), int(1.2 * MIB)]) == 26 * MIB
    assert caching_allocator_reserved_bytes([259 * MIB, int(1.2 * MIB)]) == 260 * MIB + 20 * MIB


def test_sglang_weights_are_the_allocator_segments_of_the_fused_parameters(qwen25_7b):
    # SGLang logs "Load weight end ... mem usage=15.70 GB" for Qwen2.5-VL-7B (s03–s06): 0.25 GiB more
    # than the 15.45 GiB of bf16 tensors. The float32 rotary cache (128000 × 128 × 4 B) and the
    # segments PyTorch reserves for q/k/v and gate/up fused as SGLang loads them make up the rest.
    sizes = engine_parameter_allocations(qwen25_7b, 2, Quant.none, rotary_bytes=128000 * 128 * 4)
    layers = qwen25_7b.text.num_layers
    assert len(sizes) == len(qwen25_7b.tensors) - layers * (2 + 2 + 1) + 1  # 3→1 weight, 3→1 bias, 2→1 mlp, + rotary
    assert sum(sizes) == qwen25_7b.weight_bytes + 128000 * 128 * 4
    weights = sglang_weight_bytes(qwen25_7b, 2, Quant.none)
    assert abs(weights / GIB - 15.70) < 0.005
    assert weights - sum(sizes) > 0.1 * GIB


def test_sglang_shrinks_a_vlm_fraction_by_version(mineru, qwen25_7b):
    # Up to 0.4.8 every fraction, the user's too, × 0.90 (model_runner.py).
    assert sglang_vlm_fraction(sglang_rules("0.4.8"), 0.3, True, mineru) == pytest.approx(0.27)
    # From 0.4.9 a user value is kept, a default scaled by the ViT: MinerU's config gives the
    # merger's 896 as hidden_size (a smaller-than-ViT-L score), Qwen2.5-VL's tower width 1280.
    assert sglang_vlm_fraction(sglang_rules("0.5.5"), 0.3, True, mineru) == 0.3
    assert sglang_vlm_fraction(sglang_rules("0.5.5"), 0.8, False, mineru) == pytest.approx(0.8 * 0.95 * (1 - 0.1 * ((896 / 1024) ** 2 - 1)))
    assert sglang_vlm_fraction(sglang_rules("0.5.5"), 0.8, False, qwen25_7b) == pytest.approx(0.8 * 0.95 * (1 - 0.1 * 0.5625))


def test_sglang_pool_is_fraction_of_free_at_start_minus_loaded_weights(mineru):
    free = 20 * GIB
    mem = sglang_memory(mineru, sglang_rules("0.5.5"), free_at_start_bytes=free, fraction=0.5)
    assert mem.kv_cache == int(0.5 * free) - mem.weights
    assert mem.kv_tokens == mem.kv_cache // 12288


def test_qwen25vl_configs_are_accepted_with_their_vision_blocks():
    config = read_config(LOGS / "qwen2_5_vl_7b_config.json")
    assert config.family == "qwen2_5_vl"
    v = config.vision
    assert (v.embed_dim, v.intermediate_size, v.out_hidden_size, v.depth) == (1280, 3420, 3584, 32)
    tensors = {t.name: t for t in derive_tensors(config.text, v)}
    assert tensors["visual.blocks.0.mlp.gate_proj.weight"].role is TensorRole.vision_linear
    assert tensors["visual.blocks.0.mlp.down_proj.weight"].shape == (1280, 3420)
    assert "visual.blocks.0.norm1.bias" not in tensors  # RMSNorm: a weight only
    assert tensors["lm_head.weight"].shape == (152064, 3584)  # untied in the 7B
    # 8.29 B parameters, as published for Qwen2.5-VL-7B-Instruct (15.45 GiB in bf16).
    assert sum(t.numel for t in tensors.values()) == 8_292_166_656
    assert abs(sum(t.numel for t in tensors.values()) * 2 / GIB - 15.45) < 0.01


def test_qwen25vl_by_architecture_name_and_other_models_refused():
    data = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "hidden_size": 2048, "num_attention_heads": 16,
            "num_hidden_layers": 36, "num_key_value_heads": 2, "intermediate_size": 11008, "vocab_size": 151936,
            "vision_config": {"hidden_size": 1280, "out_hidden_size": 2048, "intermediate_size": 3420,
                              "depth": 32, "num_heads": 16}}
    assert parse_config(data).family == "qwen2_5_vl"
    with pytest.raises(ModelSpecError, match="not a Qwen2-VL"):
        parse_config({**data, "architectures": ["LlamaForCausalLM"], "model_type": "llama"})
