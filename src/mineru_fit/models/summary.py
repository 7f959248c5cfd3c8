"""A ModelSpec in numbers a person or script reads: parameters per part, bytes per dtype, KV per token."""

from __future__ import annotations

from typing import Any

from mineru_fit.models.roles import part_of
from mineru_fit.models.spec import ModelSpec

PARTS = ("vision", "merger", "text", "embedding", "lm_head", "other")


def params_by_part(spec: ModelSpec) -> dict[str, int]:
    """Parameter count per model part (vision tower, merger, language model layers, embedding, lm_head)."""
    out = dict.fromkeys(PARTS, 0)
    for t in spec.tensors:
        out[part_of(t.name)] += t.numel
    return {k: v for k, v in out.items() if v or k in ("vision", "merger", "text", "embedding")}


def spec_summary(spec: ModelSpec) -> dict[str, Any]:
    """JSON-ready summary; every byte figure is an int in bytes."""
    t, v, i = spec.text, spec.vision, spec.image
    return {
        "name": spec.name,
        "source": spec.source,
        "torch_dtype": spec.torch_dtype,
        "tensors_from_header": spec.tensors_from_header,
        "tensor_count": len(spec.tensors),
        "param_count": spec.param_count,
        "weight_bytes": spec.weight_bytes,
        "params_by_part": params_by_part(spec),
        "params_by_role": {role.value: n for role, n in spec.params_by_role().items()},
        "bytes_by_dtype": spec.bytes_by_dtype(),
        "kv_bytes_per_token": {"bf16": spec.kv_bytes_per_token(2), "fp8": spec.kv_bytes_per_token(1)},
        "text": {
            "hidden_size": t.hidden_size,
            "num_layers": t.num_layers,
            "num_heads": t.num_heads,
            "num_kv_heads": t.num_kv_heads,
            "head_dim": t.head_dim,
            "intermediate_size": t.intermediate_size,
            "vocab_size": t.vocab_size,
            "tie_word_embeddings": t.tie_word_embeddings,
            "max_position_embeddings": t.max_position_embeddings,
        },
        "vision": {
            "embed_dim": v.embed_dim,
            "depth": v.depth,
            "num_heads": v.num_heads,
            "mlp_ratio": v.mlp_ratio,
            "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "out_hidden_size": v.out_hidden_size,
            "pixels_per_token": v.pixels_per_token,
        },
        "image": {"min_pixels": i.min_pixels, "max_pixels": i.max_pixels},
    }
