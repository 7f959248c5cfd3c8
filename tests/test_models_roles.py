"""Tensor roles: what bitsandbytes would quantize (Linear weights) and what it leaves alone."""

from __future__ import annotations

import pytest

from mineru_fit.models import TensorRole, default_spec
from mineru_fit.models.roles import classify, part_of

R = TensorRole
CASES = [
    # checkpoint naming (MinerU2.5 files, save_pretrained)
    ("model.embed_tokens.weight", (151936, 896), R.embedding, "embedding"),
    ("model.layers.3.self_attn.q_proj.weight", (896, 896), R.linear, "text"),
    ("model.layers.3.self_attn.k_proj.bias", (128,), R.bias, "text"),
    ("model.layers.3.self_attn.o_proj.weight", (896, 896), R.linear, "text"),
    ("model.layers.3.mlp.gate_proj.weight", (4864, 896), R.linear, "text"),
    ("model.layers.3.mlp.down_proj.weight", (896, 4864), R.linear, "text"),
    ("model.layers.3.input_layernorm.weight", (896,), R.norm, "text"),
    ("model.layers.3.post_attention_layernorm.weight", (896,), R.norm, "text"),
    ("model.norm.weight", (896,), R.norm, "text"),
    ("lm_head.weight", (151936, 896), R.lm_head, "lm_head"),
    ("visual.patch_embed.proj.weight", (1280, 3, 2, 14, 14), R.conv, "vision"),
    ("visual.blocks.0.norm1.weight", (1280,), R.norm, "vision"),
    ("visual.blocks.0.norm1.bias", (1280,), R.bias, "vision"),
    ("visual.blocks.0.attn.qkv.weight", (3840, 1280), R.vision_linear, "vision"),
    ("visual.blocks.0.attn.proj.weight", (1280, 1280), R.vision_linear, "vision"),
    ("visual.blocks.31.mlp.fc1.weight", (5120, 1280), R.vision_linear, "vision"),
    ("visual.blocks.31.mlp.fc2.bias", (1280,), R.bias, "vision"),
    ("visual.merger.ln_q.weight", (1280,), R.norm, "merger"),
    ("visual.merger.mlp.0.weight", (5120, 5120), R.vision_linear, "merger"),
    ("visual.merger.mlp.2.weight", (896, 5120), R.vision_linear, "merger"),
    # transformers 5 in-memory naming
    ("model.language_model.embed_tokens.weight", (151936, 896), R.embedding, "embedding"),
    ("model.language_model.layers.0.self_attn.v_proj.weight", (128, 896), R.linear, "text"),
    ("model.language_model.norm.weight", (896,), R.norm, "text"),
    ("model.visual.blocks.0.attn.qkv.weight", (3840, 1280), R.vision_linear, "vision"),
    ("model.visual.patch_embed.proj.weight", (1280, 3, 2, 14, 14), R.conv, "vision"),
    ("model.visual.merger.mlp.0.bias", (5120,), R.bias, "merger"),
    # pre-quantized checkpoints carry side tensors that are not weights
    ("model.layers.0.mlp.up_proj.weight.absmax", (1024,), R.other, "text"),
    ("model.layers.0.mlp.up_proj.SCB", (4864,), R.other, "text"),
]


@pytest.mark.parametrize(("name", "shape", "role", "part"), CASES)
def test_role_and_part_by_name_and_shape(name, shape, role, part):
    assert classify(name, shape) is role
    assert part_of(name) == part


def test_shape_guards_the_name():
    # A 1-D "q_proj.weight" is not an nn.Linear weight; a 2-D norm is not a norm.
    assert classify("model.layers.0.self_attn.q_proj.weight", (896,)) is R.other
    assert classify("model.norm.weight", (896, 896)) is R.other


def test_every_shipped_tensor_has_a_known_role():
    spec = default_spec()
    roles = {t.role for t in spec.tensors}
    assert R.other not in roles
    by_role = spec.params_by_role()
    # 24 layers of 7 Linear weights each, and 32 blocks of 4 plus the 2 merger Linears.
    assert sum(t.role is R.linear for t in spec.tensors) == 24 * 7
    assert sum(t.role is R.vision_linear for t in spec.tensors) == 32 * 4 + 2
    assert by_role[R.embedding] == 151936 * 896
    assert R.lm_head not in by_role  # tied to the embedding: not stored
    # What bitsandbytes quantizes is most of the model, but not the embedding.
    quantizable = by_role[R.linear] + by_role[R.vision_linear]
    assert 0.85 < quantizable / spec.param_count < 0.9
