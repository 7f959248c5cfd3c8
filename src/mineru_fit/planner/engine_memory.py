"""Each engine's own KV-cache accounting, version-aware: startup settings in, bytes per term out.

Pure. `equations.py` builds plans on these functions and benchmarks/planner_vs_logs.py checks
them against public startup logs, so a plan and the check use one accounting. The rules per
engine version are in engine_versions.py; docs/memory-model.md cites the source of each.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from mineru_fit.models.spec import ModelSpec, TensorRole
from mineru_fit.planner import constants as C
from mineru_fit.planner import terms as T
from mineru_fit.planner.engine_versions import SglangRules, VllmRules
from mineru_fit.planner.levels import Quant


@dataclass(frozen=True)
class EngineMemory:
    """What the engine will hold on one GPU, as it counts it."""

    weights: int              # "Model loading took" (vLLM) / "mem usage" at load end (SGLang)
    activations: int          # vLLM's profiled peak; SGLang's prefill chunk (outside its pool)
    non_torch: int            # vLLM's non-torch increase; SGLang's metadata and pool slack
    cuda_graphs: int
    kv_cache: int             # may be negative: the engine then refuses to start
    kv_tokens: int
    budget: int               # vLLM: utilization × total; SGLang: mem_fraction_static × free at start
    fraction: float           # the utilization / mem_fraction_static the engine ends up using
    graphs_in_budget: bool    # graphs paid out of `budget` (vLLM ≥ 0.21) or beside it

    @property
    def starts(self) -> bool:
        return self.kv_tokens > 0


# --- the model's pieces both engines profile ------------------------------------------------


def engine_weight_bytes(spec: ModelSpec, dtype_bytes: int, quant: Quant, tp_size: int = 1,
                        rotary_copies: int = 0) -> int:
    """Weights on one GPU as an engine loads them, plus its rotary cos/sin cache.

    vLLM's MRotaryEmbedding keeps a cos/sin cache of 4 × max_position_embeddings rows of
    rotary_dim in the model dtype (rotary_embedding/mrope.py, 0.10.1.1: cache_max_position_num =
    max_position_embeddings * 4); it is part of what "Model loading took" reports.
    """
    dtype = {1: "float16", 2: "bfloat16", 4: "float32"}.get(dtype_bytes, "bfloat16")
    weights = math.ceil(T.weights_bytes(spec, dtype, quant, quantize_vision=True, double_quant=False) / tp_size)
    t = spec.text
    rotary = rotary_copies * t.max_position_embeddings * t.head_dim * dtype_bytes
    return weights + rotary


def image_grid_tokens(spec: ModelSpec, max_pixels: int) -> int:
    """LLM tokens of the largest image the processor makes under `max_pixels`.

    The engines profile with the image size that has the most features: the largest square the
    processor's smart_resize keeps under max_pixels, in whole merge×patch tiles (vLLM
    qwen2_vl.py get_image_size_with_most_features). MinerU2.5: 1260×1260 px = 45×45 = 2025 tokens.
    """
    tile = spec.vision.pixels_per_token  # 784 for 28×28 px
    side = math.isqrt(max_pixels // tile)
    return max(1, side * side)


def vllm_profile_encoder_tokens(spec: ModelSpec, rules: VllmRules, max_model_len: int,
                                max_pixels: int, video: bool, budget_tokens: int,
                                max_num_seqs: int, images_per_prompt: int = 1) -> int:
    """LLM tokens of the dummy images or video the profile run pushes through the vision tower at once.

    V1 profiles the modality whose largest item has the most tokens (gpu_model_runner.py
    profile_run; v1/worker/utils.py MultiModalBudget, 0.10.1.1–0.11.0), with as many items as
    the encoder budget max(max_num_batched_tokens, largest item) holds. Qwen2-VL's largest video
    is as many frame pairs of the largest image as max_model_len allows (qwen2_vl.py
    get_num_frames_with_most_features), minus one largest image up to 0.10.
    V0 (worker/model_runner.py profile_run) builds max(1, budget // tokens per prompt) dummy
    sequences, each with the prompt's limit of images, which one vision call encodes together.
    """
    image = image_grid_tokens(spec, max_pixels)
    if rules.engine == "v0":
        per_prompt = images_per_prompt * image
        sequences = max(1, min(max_num_seqs, budget_tokens // per_prompt))
        return sequences * per_prompt
    tokens = image
    if video:
        room = max_model_len - (image if rules.video_minus_image else 0)
        frames = 0
        while math.ceil((frames + 1) / 2) * image <= room:
            frames += 1
        frames = max(1, min(frames, rules.max_video_frames))
        tokens = max(image, math.ceil(frames / 2) * image)
    encoder_budget = max(budget_tokens, tokens)
    items = max(1, min(encoder_budget // tokens, max_num_seqs))
    return items * tokens


def vllm_activation_bytes(spec: ModelSpec, encoder_tokens: int, max_num_batched_tokens: int,
                          max_num_seqs: int, act_bytes: int, engine: str = "v1") -> int:
    """Peak of V1's profile run above the weights (gpu_model_runner.py profile_run, 0.10.1.1).

    Two phases: the vision tower over the dummy items, then the language model over
    max_num_batched_tokens with the encoder outputs still cached and the sampler over
    min(max_num_seqs, max_num_batched_tokens) rows of float32 logits. The peak is the larger.
    """
    vision = _engine_vision_bytes(spec, encoder_tokens, act_bytes, engine)
    held = encoder_tokens * spec.vision.out_hidden_size * act_bytes
    rows = min(max_num_seqs, max_num_batched_tokens)
    decoder = (held + T.llm_prefill_activation_bytes(spec, max_num_batched_tokens, act_bytes)
               + T.logits_bytes(spec, rows))
    return max(vision, decoder)


def _engine_vision_bytes(spec: ModelSpec, tokens: int, act_bytes: int, engine: str = "v1") -> int:
    v = spec.vision
    patches = tokens * v.spatial_merge_size**2
    widths = C.ENGINE_VISION_ACT_WIDTHS[engine]
    pixel_values = v.in_channels * v.temporal_patch_size * v.patch_size**2 * 4
    return int(patches * (v.embed_dim * widths * act_bytes + pixel_values))


def vllm_graph_bytes(spec: ModelSpec, capture_size: int, tp_size: int = 1) -> int:
    """CUDA-graph pool of V1's capture: per layer, the hidden states of the largest captured batch,
    at least a floor (ESTIMATE fitted to logged captures, docs/memory-model.md)."""
    t = spec.text
    per_layer = capture_size * t.hidden_size * C.VLLM_GRAPH_BYTES_PER_HIDDEN // max(1, tp_size)
    return max(C.VLLM_GRAPH_MIN_BYTES, t.num_layers * per_layer)


def vllm_memory(spec: ModelSpec, rules: VllmRules, *, total_bytes: int, utilization: float,
                max_model_len: int, max_num_batched_tokens: int, max_num_seqs: int,
                max_pixels: int, video_profiled: bool, images_per_prompt: int = 1,
                dtype_bytes: int = 2, kv_dtype_bytes: int = 2,
                quant: Quant = Quant.none, tp_size: int = 1, cuda_graphs: bool = True,
                capture_size: int = C.VLLM_MAX_CAPTURE_SIZE,
                kv_cache_memory_bytes: Optional[int] = None) -> EngineMemory:
    """vLLM's KV cache: utilization × total minus what its profile run measured.

    V1 from 0.9 (gpu_worker.py determine_available_memory): requested = util × total;
    KV = requested − (weights + torch peak increase + non-torch increase), the CUDA context and
    anything before the worker started not counted (utils memory_profiling); from 0.21 the CUDA
    graphs' estimated memory is subtracted too. V0 (worker.py) and V1 0.8 subtract the same terms
    from the same budget. KV is then cut to whole blocks of 16 tokens (kv_cache_utils.py).
    """
    weights = engine_weight_bytes(spec, dtype_bytes, quant, tp_size, rotary_copies=C.VLLM_MROPE_CACHE_COPIES)
    encoder = vllm_profile_encoder_tokens(spec, rules, max_model_len, max_pixels, video_profiled,
                                          max_num_batched_tokens, max_num_seqs, images_per_prompt)
    act = vllm_activation_bytes(spec, encoder, max_num_batched_tokens, max_num_seqs, dtype_bytes, rules.engine)
    if quant is not Quant.none:
        act += T.largest_linear_bytes(spec, {1: "float16", 2: "bfloat16", 4: "float32"}.get(dtype_bytes, "bfloat16"))
    non_torch = C.VLLM_NON_TORCH_BYTES + (C.VLLM_NCCL_BYTES if tp_size > 1 else 0)
    graphs = vllm_graph_bytes(spec, capture_size, tp_size) if cuda_graphs else 0
    budget = int(utilization * total_bytes)
    per_token = T.kv_bytes_per_token(spec, kv_dtype_bytes, tp_size)
    if kv_cache_memory_bytes is not None:
        kv = kv_cache_memory_bytes
    else:
        kv = budget - weights - act - non_torch - (graphs if rules.graphs_in_budget else 0)
    tokens = max(0, kv // per_token) // C.VLLM_BLOCK_TOKENS * C.VLLM_BLOCK_TOKENS
    return EngineMemory(weights, act, non_torch, graphs, kv, tokens, budget, utilization, rules.graphs_in_budget)


# --- SGLang --------------------------------------------------------------------------------------


def sglang_default_fraction(rules: SglangRules, gpu_mem_mib: float, tp_size: int = 1,
                            chunk_tokens: Optional[int] = None, graph_bs: Optional[int] = None) -> float:
    """SGLang's own mem_fraction_static when none is given (server_args.py, per formula)."""
    g = gpu_mem_mib
    if rules.default_formula == "tp_table":
        table = ((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87))
        fraction = next((f for size, f in table if tp_size >= size), 0.88) if g <= 81920 else 0.88
        if g > 96 * 1024:
            fraction = min(fraction + 48 * 1024 * (1 - fraction) / g, (g - 18 * 1024) / g)
        return round(fraction, 3)
    if rules.default_formula == "reserve_table":
        if g < 35 * 1024:
            reserved = (2.8 + tp_size / 10) * 1024
        elif g < 90 * 1024:
            reserved = (9.5 + tp_size / 2) * 1024
        elif g < 160 * 1024:
            reserved = (12 + tp_size / 2) * 1024
        else:
            reserved = 32 * 1024
        return round((g - reserved) / g, 3)
    chunk, bs = sglang_default_chunk_and_graphs(rules, g, tp_size)
    chunk = chunk_tokens if chunk_tokens is not None else chunk
    bs = graph_bs if graph_bs is not None else bs
    reserved = 512 + 1.5 * max(chunk, 2048) + 2 * bs + tp_size / 8 * 1024
    if g > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((g - reserved) / g, 3)


def sglang_default_chunk_and_graphs(rules: SglangRules, gpu_mem_mib: float, tp_size: int = 1) -> tuple[int, int]:
    """Default chunked_prefill_size and cuda_graph_max_bs by card size (server_args.py
    _handle_gpu_memory_settings, 0.5.3–0.5.5; 24 graph sizes below 35 GiB from 0.5.5, 16 before)."""
    g = gpu_mem_mib
    small_tp = tp_size < 4
    if g < 20 * 1024:
        return 2048, 8
    if g < 35 * 1024:
        return 2048, ((24 if rules.version >= (0, 5, 5) else 16) if small_tp else 80)
    if g < 60 * 1024:
        return 4096, (32 if small_tp else 160)
    if g < 160 * 1024:
        return 8192, (256 if small_tp else 512)
    return 16384, 512


def sglang_vlm_fraction(rules: SglangRules, fraction: float, user_given: bool, spec: ModelSpec,
                        multimodal: bool = True) -> float:
    """mem_fraction_static after SGLang's shrink for a multimodal model (rules per release).

    Up to 0.4.8: × 0.90, user value included (model_runner.py). 0.4.9–0.4.9.post2: × 0.90 of the
    default only (server_args.py). From 0.4.9.post3, only a default is shrunk
    (server_args.py adjust_mem_fraction_for_vlm): × 0.95 × clamp(1 − 0.1 × (c − 1), 0.8, 1.05) with
    c = layers × hidden² of the ViT over ViT-L/14's 24 × 1024². It reads the HF vision config's
    num_hidden_layers (Qwen2-VL and Qwen2.5-VL configs have none: 24 is taken) and hidden_size
    (Qwen2-VL: the merger's output; Qwen2.5-VL: the tower width). `multimodal=False`: SGLang does
    not treat the model as one (no vision_config to read), so nothing is shrunk.
    """
    if not multimodal:
        return fraction
    if rules.vlm_reduction == "model_runner_0_9":
        return fraction * 0.90
    if user_given:
        return fraction
    if rules.vlm_reduction == "default_0_9":
        return fraction * 0.90
    v = spec.vision
    hidden = v.out_hidden_size if v.variant == "qwen2_vl" else v.embed_dim
    ratio = 24 * hidden**2 / (24 * 1024**2)
    factor = max(0.8, min(1.05, 1.0 - 0.1 * (ratio - 1.0)))
    return fraction * 0.95 * factor


# --- what loading the weights takes from the free memory the engine measures ---------------------


def caching_allocator_reserved_bytes(sizes: Iterable[int]) -> int:
    """Memory PyTorch's CUDA caching allocator reserves for tensors allocated in this order, never freed.

    The rules of c10/cuda/CUDACachingAllocator.cpp: a request is rounded up to 512 B; one of at most
    1 MiB comes from 2 MiB segments, one under 10 MiB from 20 MiB segments, a larger one gets its
    own segment rounded up to 2 MiB; a free block is reused best-fit and split when what remains is
    at least 512 B (small pool) or more than 1 MiB (large pool). SGLang's "mem usage" at load end
    is the free memory before minus after (torch.cuda.mem_get_info after empty_cache), so it counts
    these segments, not the bytes of the tensors; vLLM's "Model loading took" counts the bytes.
    """
    free: dict[bool, list[int]] = {True: [], False: []}
    reserved = 0
    for n in sizes:
        size = max(_ALLOC_MIN_BLOCK, -(-n // _ALLOC_MIN_BLOCK) * _ALLOC_MIN_BLOCK)
        small = size <= _ALLOC_SMALL
        blocks = free[small]
        i = bisect.bisect_left(blocks, size)
        if i < len(blocks):
            block = blocks.pop(i)
        else:
            if small:
                block = _ALLOC_SMALL_BUFFER
            elif size < _ALLOC_MIN_LARGE:
                block = _ALLOC_LARGE_BUFFER
            else:
                block = -(-size // _ALLOC_ROUND_LARGE) * _ALLOC_ROUND_LARGE
            reserved += block
        rest = block - size
        if (rest >= _ALLOC_MIN_BLOCK) if small else (rest > _ALLOC_SMALL):
            bisect.insort(blocks, rest)
    return reserved


_ALLOC_MIN_BLOCK = 512
_ALLOC_SMALL = 1 << 20
_ALLOC_SMALL_BUFFER = 2 << 20
_ALLOC_MIN_LARGE = 10 << 20
_ALLOC_ROUND_LARGE = 2 << 20
_ALLOC_LARGE_BUFFER = 20 << 20

# The language model's projections both engines load into one fused parameter (QKVParallelLinear,
# MergedColumnParallelLinear): q/k/v weight and bias, gate/up weight.
_FUSED = re.compile(r"layers\.\d+\.(?:self_attn\.(q|k|v)_proj\.(weight|bias)|mlp\.(gate|up)_proj\.weight)$")


def engine_parameter_allocations(spec: ModelSpec, dtype_bytes: int, quant: Quant, tp_size: int = 1,
                                 rotary_bytes: int = 0) -> list[int]:
    """Bytes of each parameter an engine allocates, in module order (vision tower, language model,
    lm_head), with q/k/v and gate/up fused as the engines fuse them, split over tp_size, and the
    rotary cos/sin cache created in the first decoder layer."""
    dtype = {1: "float16", 2: "bfloat16", 4: "float32"}.get(dtype_bytes, "bfloat16")
    sizes: list[int] = []
    pending: dict[str, int] = {}
    for t in spec.tensors:
        quantizable = t.role in (TensorRole.linear, TensorRole.vision_linear)
        n = (T.quantized_tensor_bytes(t, quant, double_quant=False) if quant is not Quant.none and quantizable
             else t.numel * T.DTYPE_BYTES[dtype])
        n = -(-n // tp_size) if t.role is not TensorRole.norm else n
        fused = _FUSED.search(t.name)
        if fused:
            key = "qkv." + fused.group(2) if fused.group(1) else "gate_up"
            pending[key] = pending.get(key, 0) + n
            if fused.group(1) in ("v",) or fused.group(3) == "up":
                sizes.append(pending.pop(key))
            continue
        sizes.append(n)
        if rotary_bytes and t.name.endswith("layers.0.self_attn.o_proj.weight"):
            sizes.append(rotary_bytes)
    return sizes


def sglang_weight_bytes(spec: ModelSpec, dtype_bytes: int, quant: Quant, tp_size: int = 1) -> int:
    """What SGLang's "Load weight end ... mem usage" reports: the allocator's segments for the fused
    parameters plus its rotary cos/sin cache, kept in float32 on CUDA (rotary_embedding.py
    "cache needs to be in FP32", 0.4.7–0.5.x) for max_position_embeddings positions."""
    t = spec.text
    rotary = C.SGLANG_MROPE_CACHE_COPIES * t.max_position_embeddings * t.head_dim * C.SGLANG_ROPE_CACHE_DTYPE_BYTES
    sizes = engine_parameter_allocations(spec, dtype_bytes, quant, tp_size, rotary_bytes=rotary)
    return caching_allocator_reserved_bytes(sizes) + C.SGLANG_LOAD_EXTRA_BYTES


def sglang_memory(spec: ModelSpec, rules: SglangRules, *, free_at_start_bytes: int, fraction: float,
                  dtype_bytes: int = 2, kv_dtype_bytes: int = 2, quant: Quant = Quant.none,
                  tp_size: int = 1, chunk_tokens: int = 2048, max_image_tokens: int = 2048,
                  cuda_graphs: bool = True, graph_bs: int = 8, weights_bytes: Optional[int] = None,
                  max_total_tokens: Optional[int] = None) -> EngineMemory:
    """SGLang's KV pool: mem_fraction_static × (free at start) minus what loading the weights used.

    model_runner.py profile_max_num_token (0.4.6–0.5.5): rest = available_after_load −
    total_at_start × (1 − mem_fraction_static), where total_at_start is the free memory measured
    once the CUDA context exists ("Load weight begin. avail mem") and available_after_load the free
    memory after the weights ("Load weight end"). So KV = fraction × F0 − (F0 − F1), in whole
    tokens of cell size, then cut to --max-total-tokens when one is given (init_memory_pool).
    `weights_bytes` replaces the predicted load (a model the planner does not size).
    """
    weights = sglang_weight_bytes(spec, dtype_bytes, quant, tp_size) if weights_bytes is None else weights_bytes
    budget = int(fraction * free_at_start_bytes)
    kv = budget - weights
    per_token = T.kv_bytes_per_token(spec, kv_dtype_bytes, tp_size)
    tokens = max(0, kv // per_token)
    if max_total_tokens is not None:
        tokens = min(tokens, max_total_tokens)
    encoder = max(max_image_tokens, chunk_tokens)
    act = max(_engine_vision_bytes(spec, max_image_tokens, dtype_bytes),
              T.llm_prefill_activation_bytes(spec, chunk_tokens, dtype_bytes)
              + encoder * spec.vision.out_hidden_size * dtype_bytes)
    graphs = (C.CUDA_GRAPH_BASE_BYTES + graph_bs * C.CUDA_GRAPH_BYTES_PER_BS) if cuda_graphs else 0
    return EngineMemory(weights, act, C.SGLANG_METADATA_BYTES, graphs, kv, tokens, budget, fraction, False)
