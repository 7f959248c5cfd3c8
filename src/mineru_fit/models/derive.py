"""The tensor list of a Qwen2-VL (or Qwen2.5-VL) from its config alone, for when no safetensors header exists.

Mirrors the modules transformers' Qwen2VLForConditionalGeneration (and Qwen2_5_VLForConditionalGeneration)
creates; a test compares the two for several configs, and against the headers save_pretrained writes.
"""

from __future__ import annotations

from typing import Iterator, Literal

from mineru_fit.models.roles import classify
from mineru_fit.models.spec import TensorInfo, TextSpec, VisionSpec

# "checkpoint": names as stored on disk (MinerU2.5 files, save_pretrained output);
# "transformers": names of the in-memory model in transformers >= 5.
Naming = Literal["checkpoint", "transformers"]
_PREFIXES: dict[str, tuple[str, str]] = {
    "checkpoint": ("visual.", "model."),
    "transformers": ("model.visual.", "model.language_model."),
}


def derive_tensors(
    text: TextSpec, vision: VisionSpec, *, dtype: str = "BF16", naming: Naming = "checkpoint"
) -> tuple[TensorInfo, ...]:
    """Every stored tensor (tied lm_head omitted), with roles, in module order."""
    vision_prefix, text_prefix = _PREFIXES[naming]
    shapes = [*_vision(vision, vision_prefix), *_text(text, text_prefix)]
    if not text.tie_word_embeddings:
        shapes.append(("lm_head.weight", (text.vocab_size, text.hidden_size)))
    return tuple(TensorInfo(name=n, dtype=dtype, shape=s, role=classify(n, s)) for n, s in shapes)


Shapes = Iterator[tuple[str, tuple[int, ...]]]


def _linear(name: str, out_features: int, in_features: int, bias: bool = True) -> Shapes:
    yield f"{name}.weight", (out_features, in_features)
    if bias:
        yield f"{name}.bias", (out_features,)


def _layer_norm(name: str, dim: int) -> Shapes:
    yield f"{name}.weight", (dim,)
    yield f"{name}.bias", (dim,)


def _rms_norm(name: str, dim: int) -> Shapes:
    yield f"{name}.weight", (dim,)


def _vision(v: VisionSpec, prefix: str) -> Shapes:
    e = v.embed_dim
    yield f"{prefix}patch_embed.proj.weight", (e, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    mlp = v.intermediate_size
    swiglu = v.variant == "qwen2_5_vl"
    # Qwen2-VL's blocks use LayerNorm (weight and bias); Qwen2.5-VL's use RMSNorm (weight only).
    norm = _rms_norm if swiglu else _layer_norm
    for i in range(v.depth):
        block = f"{prefix}blocks.{i}"
        yield from norm(f"{block}.norm1", e)
        yield from norm(f"{block}.norm2", e)
        yield from _linear(f"{block}.attn.qkv", 3 * e, e)
        yield from _linear(f"{block}.attn.proj", e, e)
        if swiglu:
            yield from _linear(f"{block}.mlp.gate_proj", mlp, e)
            yield from _linear(f"{block}.mlp.up_proj", mlp, e)
            yield from _linear(f"{block}.mlp.down_proj", e, mlp)
        else:
            yield from _linear(f"{block}.mlp.fc1", mlp, e)
            yield from _linear(f"{block}.mlp.fc2", e, mlp)
    merged = e * v.spatial_merge_size**2  # merge×merge neighbouring patches are concatenated
    yield from norm(f"{prefix}merger.ln_q", e)
    yield from _linear(f"{prefix}merger.mlp.0", merged, merged)
    yield from _linear(f"{prefix}merger.mlp.2", v.out_hidden_size, merged)


def _text(t: TextSpec, prefix: str) -> Shapes:
    h, q, kv = t.hidden_size, t.num_heads * t.head_dim, t.num_kv_heads * t.head_dim
    yield f"{prefix}embed_tokens.weight", (t.vocab_size, h)
    for i in range(t.num_layers):
        layer = f"{prefix}layers.{i}"
        yield from _linear(f"{layer}.self_attn.q_proj", q, h)
        yield from _linear(f"{layer}.self_attn.k_proj", kv, h)
        yield from _linear(f"{layer}.self_attn.v_proj", kv, h)
        yield from _linear(f"{layer}.self_attn.o_proj", h, q, bias=False)
        yield from _linear(f"{layer}.mlp.gate_proj", t.intermediate_size, h, bias=False)
        yield from _linear(f"{layer}.mlp.up_proj", t.intermediate_size, h, bias=False)
        yield from _linear(f"{layer}.mlp.down_proj", h, t.intermediate_size, bias=False)
        yield f"{layer}.input_layernorm.weight", (h,)
        yield f"{layer}.post_attention_layernorm.weight", (h,)
    yield f"{prefix}norm.weight", (h,)
