"""ModelSpec: what a checkpoint is, from config.json and safetensors headers only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

# Bytes per element of the dtypes a safetensors header can name.
DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}


class TensorRole(str, Enum):
    """What a tensor is for; quantizers treat each role differently."""

    linear = "linear"              # weight of an nn.Linear in the language model
    vision_linear = "vision_linear"  # weight of an nn.Linear in the vision tower or merger
    embedding = "embedding"        # token embeddings (and an untied lm_head)
    lm_head = "lm_head"
    bias = "bias"
    norm = "norm"
    conv = "conv"                  # the vision patch embedding (Conv3d)
    other = "other"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype name: BF16, F32, ...
    shape: tuple[int, ...]
    role: TensorRole = TensorRole.other

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.numel * DTYPE_BYTES[self.dtype])


@dataclass(frozen=True)
class TextSpec:
    """The language model (Qwen2)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int


@dataclass(frozen=True)
class VisionSpec:
    """The NaViT vision encoder and its patch merger."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    in_channels: int
    out_hidden_size: int
    # "qwen2_vl": LayerNorm + fc1/GELU/fc2 blocks (Qwen2-VL, MinerU2.5); "qwen2_5_vl": RMSNorm +
    # gate/up/down SwiGLU blocks with windowed attention (Qwen2.5-VL). Same tensor roles, other names.
    variant: str = "qwen2_vl"

    @property
    def intermediate_size(self) -> int:
        """Width of one block's MLP (4 × embed for Qwen2-VL, 3420 for Qwen2.5-VL's 1280)."""
        return int(round(self.embed_dim * self.mlp_ratio))

    @property
    def pixels_per_patch(self) -> int:
        return self.patch_size * self.patch_size

    @property
    def pixels_per_token(self) -> int:
        # One LLM token per merge×merge patches: 28×28 = 784 pixels for MinerU2.5.
        return self.pixels_per_patch * self.spatial_merge_size**2


@dataclass(frozen=True)
class ImageSpec:
    """The image processor's pixel bounds."""

    min_pixels: int
    max_pixels: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # "package" (shipped data) or the directory it was read from
    text: TextSpec
    vision: VisionSpec
    image: ImageSpec
    torch_dtype: str  # the checkpoint's dtype, e.g. "bfloat16"
    tensors: tuple[TensorInfo, ...]
    tensors_from_header: bool  # False when the tensor list was derived from config.json

    @property
    def weight_bytes(self) -> int:
        """Bytes of every tensor as stored."""
        return sum(t.nbytes for t in self.tensors)

    @property
    def param_count(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def kv_bytes_per_token_per_byte_of_dtype(self) -> int:
        """K and V, every layer, every KV head: multiply by the KV dtype's bytes."""
        t = self.text
        return 2 * t.num_layers * t.num_kv_heads * t.head_dim

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2) -> int:
        """KV-cache bytes one token costs; 2 for bf16/fp16, 1 for fp8."""
        return int(self.kv_bytes_per_token_per_byte_of_dtype * kv_dtype_bytes)

    def bytes_by_dtype(self) -> dict[str, int]:
        """Stored bytes per safetensors dtype, e.g. {"BF16": 2312053248}."""
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.dtype] = out.get(t.dtype, 0) + t.nbytes
        return out

    def params_by_role(self) -> dict[TensorRole, int]:
        """Parameter count per TensorRole (quantizers size each role differently)."""
        out: dict[TensorRole, int] = {}
        for t in self.tensors:
            out[t.role] = out.get(t.role, 0) + t.numel
        return out
