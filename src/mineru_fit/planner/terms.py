"""Each memory term in bytes, as a pure function of the model spec and the settings.

docs/memory-model.md gives every formula here with its source.
"""

from __future__ import annotations

import math

from mineru_fit.models.spec import ModelSpec, TensorInfo, TensorRole
from mineru_fit.planner import constants as C
from mineru_fit.planner.levels import Quant

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# The part of a bitsandbytes NF4 quant state that does not grow with the tensor: the
# 16-entry code (fp32), the 256-entry nested code (fp32) and the packed state blob.
NF4_STATE_FIXED_BYTES = 16 * 4 + 256 * 4 + 168


def quantized_tensor_bytes(tensor: TensorInfo, quant: Quant, double_quant: bool = True) -> int:
    """Bytes of one Linear weight after quantization, scales and state included."""
    n = tensor.numel
    rows = tensor.shape[0] if tensor.shape else 1
    if quant is Quant.nf4:
        blocks = math.ceil(n / C.NF4_BLOCK)
        if double_quant:
            nested = math.ceil(blocks / C.NF4_DQ_SECOND_BLOCK)
            return math.ceil(n / 2) + blocks + nested * 4 + NF4_STATE_FIXED_BYTES
        return math.ceil(n / 2) + blocks * 4 + NF4_STATE_FIXED_BYTES
    if quant is Quant.int8:
        return n + rows * C.INT8_ROW_SCALE_BYTES
    if quant is Quant.fp8:
        return n + rows * C.FP8_CHANNEL_SCALE_BYTES
    raise ValueError(f"not a quantized format: {quant}")


def weights_bytes(
    spec: ModelSpec, dtype: str, quant: Quant, *, quantize_vision: bool, double_quant: bool = True
) -> int:
    """Weights on the device: quantized Linear weights, everything else in the compute dtype.

    Embeddings, norms, biases, the patch conv and an untied lm_head are never quantized
    (bitsandbytes in transformers leaves them, and so do the engines).
    """
    per_elem = DTYPE_BYTES[dtype]
    total = 0
    for t in spec.tensors:
        quantizable = t.role is TensorRole.linear or (quantize_vision and t.role is TensorRole.vision_linear)
        if quant is not Quant.none and quantizable:
            total += quantized_tensor_bytes(t, quant, double_quant)
        else:
            total += t.numel * per_elem
    return total


def largest_linear_bytes(spec: ModelSpec, dtype: str) -> int:
    """A quantized matmul dequantizes its weight into a temporary of this size at most."""
    linears = [t.numel for t in spec.tensors if t.role in (TensorRole.linear, TensorRole.vision_linear)]
    return max(linears, default=0) * DTYPE_BYTES[dtype]


def kv_bytes_per_token(spec: ModelSpec, kv_dtype_bytes: int, tp_size: int = 1) -> int:
    """K and V for every layer; with tensor parallelism each GPU holds its share of KV heads
    (heads are replicated when tp exceeds their number)."""
    t = spec.text
    heads_per_gpu = max(1, math.ceil(t.num_kv_heads / tp_size))
    return 2 * t.num_layers * heads_per_gpu * t.head_dim * kv_dtype_bytes


def image_tokens(pixels: int, spec: ModelSpec) -> int:
    """LLM tokens for an image of at most `pixels` pixels after the processor's resize."""
    return max(1, pixels // spec.vision.pixels_per_token)


def vision_activation_bytes(spec: ModelSpec, llm_tokens: int, act_bytes: int) -> int:
    """Peak of the vision tower for images worth `llm_tokens` tokens, processed together.

    Per layer, not cumulative: patches × embed_dim × VISION_ACT_WIDTHS × dtype bytes, plus the
    pixel values the processor hands over in float32.
    """
    v = spec.vision
    patches = llm_tokens * v.spatial_merge_size**2
    return int(patches * v.embed_dim * C.VISION_ACT_WIDTHS * act_bytes) + pixel_values_bytes(spec, llm_tokens)


def pixel_values_bytes(spec: ModelSpec, llm_tokens: int) -> int:
    """The float32 pixel values the processor hands over for images worth `llm_tokens` tokens."""
    v = spec.vision
    patches = llm_tokens * v.spatial_merge_size**2
    return patches * v.in_channels * v.temporal_patch_size * v.patch_size**2 * 4


def llm_prefill_activation_bytes(spec: ModelSpec, tokens: int, act_bytes: int) -> int:
    """Peak of one decoder layer's forward over `tokens` tokens (attention by SDPA: linear)."""
    t = spec.text
    widths = C.LLM_ACT_INTERMEDIATE_WIDTHS * t.intermediate_size + C.LLM_ACT_HIDDEN_WIDTHS * t.hidden_size
    return tokens * widths * act_bytes


def logits_bytes(spec: ModelSpec, sequences: int) -> int:
    """Float32 logits of the last position of each sequence, with the sampler's copy."""
    return sequences * spec.text.vocab_size * 4 * C.LOGITS_COPIES


def cuda_graph_bytes(max_batch: int) -> int:
    return C.CUDA_GRAPH_BASE_BYTES + max_batch * C.CUDA_GRAPH_BYTES_PER_BS


def allocator_margin_bytes(dynamic_bytes: int, cpu: bool = False) -> int:
    """Rounding and fragmentation of the allocator over the memory that comes and goes: CUDA's
    caching allocator on a GPU, glibc's heap on the CPU."""
    fraction = C.CPU_HEAP_MARGIN_FRACTION if cpu else C.ALLOCATOR_MARGIN_FRACTION
    return max(C.ALLOCATOR_MARGIN_MIN_BYTES, int(dynamic_bytes * fraction))
