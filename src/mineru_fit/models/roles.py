"""Which TensorRole and model part each Qwen2-VL tensor belongs to, by name and shape.

Accepts both checkpoint naming (model.layers.N..., visual.blocks.N..., lm_head) and
transformers 5's in-memory naming (model.language_model.layers..., model.visual...).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Literal

from mineru_fit.models.spec import TensorInfo, TensorRole

Part = Literal["vision", "merger", "text", "embedding", "lm_head", "other"]

_VISION_PREFIXES = ("visual.", "model.visual.")
_TEXT_LINEARS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
# Qwen2-VL's vision MLP is fc1/fc2; Qwen2.5-VL's is the SwiGLU gate_proj/up_proj/down_proj.
_VISION_LINEARS = frozenset({"qkv", "proj", "fc1", "fc2", "gate_proj", "up_proj", "down_proj"})
_NORMS = frozenset({"norm", "norm1", "norm2", "ln_q", "input_layernorm", "post_attention_layernorm"})


def classify(name: str, shape: tuple[int, ...]) -> TensorRole:
    """The role of one tensor; quantizers act on `linear` and `vision_linear` only."""
    parts = name.split(".")
    leaf, module = parts[-1], parts[-2] if len(parts) > 1 else ""
    ndim = len(shape)
    if leaf == "bias" and ndim == 1:
        return TensorRole.bias
    if leaf != "weight":
        return TensorRole.other  # e.g. bitsandbytes' absmax/quant_map of a pre-quantized checkpoint
    if module == "embed_tokens" and ndim == 2:
        return TensorRole.embedding
    if module == "lm_head" and ndim == 2:
        return TensorRole.lm_head
    if (module in _NORMS or module.endswith("norm")) and ndim == 1:
        return TensorRole.norm
    vision = name.startswith(_VISION_PREFIXES)
    if vision and "patch_embed" in parts and ndim >= 3:
        return TensorRole.conv
    if ndim != 2:
        return TensorRole.other
    if vision and (module in _VISION_LINEARS or _is_merger_linear(parts)):
        return TensorRole.vision_linear
    if not vision and module in _TEXT_LINEARS:
        return TensorRole.linear
    return TensorRole.other


def part_of(name: str) -> Part:
    """Which part of the model a tensor lives in: vision tower, merger, language model, ..."""
    parts = name.split(".")
    if name.startswith(_VISION_PREFIXES):
        return "merger" if "merger" in parts else "vision"
    if "embed_tokens" in parts:
        return "embedding"
    if parts[0] == "lm_head":
        return "lm_head"
    if parts[0] == "model":
        return "text"
    return "other"


def with_roles(tensors: Iterable[TensorInfo]) -> tuple[TensorInfo, ...]:
    """The same tensors with `role` set by classify()."""
    return tuple(replace(t, role=classify(t.name, t.shape)) for t in tensors)


def _is_merger_linear(parts: list[str]) -> bool:
    # merger.mlp.0 and merger.mlp.2 are the two nn.Linear of nn.Sequential(Linear, GELU, Linear).
    return "merger" in parts and len(parts) >= 3 and parts[-3] == "mlp" and parts[-2].isdigit()
