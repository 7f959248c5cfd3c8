"""One memory equation per engine: settings in, bytes per term out.

- built-in: a hard cap; KV for batch × context (an upper bound: the cache grows with the tokens
  in flight) and one request's prefill beside the rows in flight inside it.
- SGLang: a static pool of mem_fraction_static × (memory free at start) holds weights and KV;
  activations and CUDA graphs live in the rest.
- vLLM: reserves gpu_memory_utilization × total memory, refuses to start when less is free,
  and gives KV what its profile run leaves (or exactly --kv-cache-memory-bytes).

The SGLang and vLLM terms come from engine_memory.py, each engine's own accounting for the
version the plan assumes (constants.DEFAULT_*_VERSION; rules in engine_versions.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from mineru_fit.models.spec import ModelSpec
from mineru_fit.planner import constants as C
from mineru_fit.planner import engine_memory as E
from mineru_fit.planner.calibration import cuda_context_bytes
from mineru_fit.planner.engine_versions import sglang_rules, vllm_rules
from mineru_fit.planner import terms as T
from mineru_fit.planner.inputs import Hardware
from mineru_fit.planner.levels import Level, Quant
from mineru_fit.planner.workload import ContextSplit
from mineru_fit.units import MIB, gib


@dataclass(frozen=True)
class Resolved:
    """A level's knobs after the engine, the GPU and the user's flags had their say."""

    engine: str
    level: Level
    dtype: str
    quant: Quant
    kv_dtype: str          # the compute dtype's name, or fp8
    context: ContextSplit
    batch: int
    chunk_tokens: int
    cuda_graphs: bool
    graph_bs: int
    sized_kv: bool
    user_fraction: Optional[float]
    tp_size: int = 1
    dp_size: int = 1

    @property
    def kv_dtype_bytes(self) -> int:
        return 1 if self.kv_dtype == "fp8" else T.DTYPE_BYTES[self.dtype]

    @property
    def act_bytes(self) -> int:
        return T.DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class Sizing:
    terms: dict[str, int]
    kv_tokens: int
    fraction: Optional[float]
    problems: tuple[str, ...] = ()

    @property
    def peak_bytes(self) -> int:
        return sum(self.terms.values())


def fraction_up(share: float) -> float:
    """Round a memory share up to the step engines take, so the pool still holds the plan."""
    steps = math.ceil(share / C.FRACTION_STEP - 1e-9)
    return round(min(1.0, max(C.FRACTION_STEP, steps * C.FRACTION_STEP)), 2)


def _terms(weights: int, kv: int, act: int, graphs: int, runtime: int, margin: int) -> dict[str, int]:
    return {
        "weights": int(weights),
        "kv_cache": int(kv),
        "activations": int(act),
        "cuda_graphs": int(graphs),
        "runtime": int(runtime),
        "margin": int(margin),
    }


def _kv_short(kv_tokens: int, r: Resolved, fix: str) -> Optional[str]:
    if kv_tokens >= r.context.max_model_len:
        return None
    return (
        f"the KV cache holds {max(kv_tokens, 0)} tokens, less than one request of "
        f"{r.context.max_model_len} — use {fix} or a shorter --max-model-len"
    )


def _one_request(r: Resolved, per_token: int) -> tuple[int, int]:
    # A pool that cannot hold one request means the engine will not start. The plan then
    # states what the level needs (one full request of KV), not the pool it was given, so
    # its predicted peak is a requirement that can be compared across levels.
    tokens = r.context.max_model_len
    return tokens, tokens * per_token


def size_builtin(spec: ModelSpec, hw: Hardware, r: Resolved) -> Sizing:
    weights = T.weights_bytes(spec, r.dtype, r.quant, quantize_vision=True, double_quant=True)
    kv_tokens = r.batch * r.context.max_model_len
    kv = kv_tokens * T.kv_bytes_per_token(spec, r.kv_dtype_bytes)
    # The engine prefills one request (one image: its per-request limit) at a time, alone, while
    # the rows in flight wait; a decode step then runs every row at once, one token each.
    img_tokens = r.context.max_image_tokens
    vision = T.vision_activation_bytes(spec, img_tokens, r.act_bytes)
    # The image embeddings stay alive while the language model runs its prefill. That prefill
    # takes the whole prompt at once, and a request may fill the context with text (MinerU's
    # cross-page table merge sends text-only prompts), so it is sized for max_model_len tokens.
    held = img_tokens * spec.text.hidden_size * r.act_bytes
    llm = T.llm_prefill_activation_bytes(spec, max(r.context.max_model_len, img_tokens + C.PROMPT_TOKENS),
                                         r.act_bytes)
    # A row joining or leaving rebuilds the cache one layer at a time: that layer's keys and
    # values, padded, briefly exist twice beside the rest.
    rebuild = 2 * kv // spec.text.num_layers if r.batch > 1 else 0
    act = max(vision, llm + held) + T.logits_bytes(spec, r.batch) + rebuild
    if r.quant is not Quant.none:
        act += T.largest_linear_bytes(spec, r.dtype)
    if hw.is_cuda:
        runtime = cuda_context_bytes(hw.name)[0]
    else:  # the processor, its work on the largest image and the loaded code share the RAM budgeted
        runtime = C.CPU_RUNTIME_BYTES + C.CPU_PREPROCESS_COPIES * T.pixel_values_bytes(spec, r.context.max_image_tokens)
    # glibc's heap on the CPU; MPS, like CUDA, has a caching allocator (its RAM still holds the processor).
    margin = T.allocator_margin_bytes(act, cpu=hw.device == "cpu")
    terms = _terms(weights, kv, act, 0, runtime, margin)
    problems: list[str] = []
    # The cap (set_per_process_memory_fraction) covers the caching allocator, not the context.
    allocator_bytes = weights + kv + act + margin
    fraction: Optional[float] = None
    if hw.is_cuda:
        fraction = fraction_up(allocator_bytes / hw.total_bytes)
        if r.user_fraction is not None:
            fraction = r.user_fraction
            cap = int(r.user_fraction * hw.total_bytes)
            if allocator_bytes > cap:
                problems.append(
                    f"the plan needs {gib(allocator_bytes)} under the cap but --mem-fraction-static "
                    f"{r.user_fraction} allows {gib(cap)} — raise it to {fraction_up(allocator_bytes / hw.total_bytes)} "
                    f"or pick a more aggressive level"
                )
    return Sizing(terms, kv_tokens, fraction, tuple(problems))


def sglang_default_fraction(total_bytes: int, chunk_tokens: int, graph_bs: int) -> float:
    """SGLang's own default mem_fraction_static for a card of this size (the version the plan assumes)."""
    rules = sglang_rules(C.DEFAULT_SGLANG_VERSION)
    return E.sglang_default_fraction(rules, total_bytes / MIB, 1, chunk_tokens, graph_bs)


def _engine_activations(spec: ModelSpec, r: Resolved, running: int) -> int:
    # Images are never split across prefill chunks: the encoder sees at least one whole image.
    encoder_tokens = max(r.context.max_image_tokens, min(r.chunk_tokens, r.batch * r.context.max_image_tokens))
    vision = T.vision_activation_bytes(spec, encoder_tokens, r.act_bytes)
    llm = T.llm_prefill_activation_bytes(spec, r.chunk_tokens, r.act_bytes)
    act = max(vision, llm) + T.logits_bytes(spec, running)
    if r.quant is not Quant.none:
        act += T.largest_linear_bytes(spec, r.dtype)
    return act


def size_sglang(spec: ModelSpec, hw: Hardware, r: Resolved) -> Sizing:
    """SGLang: a pool of mem_fraction_static × (free memory once the CUDA context exists) holds
    weights and KV (engine_memory.sglang_memory); activations and graphs live beside it."""
    rules = sglang_rules(C.DEFAULT_SGLANG_VERSION)
    context = cuda_context_bytes(hw.name)[0]
    free_at_start = max(0, hw.free_bytes - context)  # SGLang measures free memory after CUDA init
    per_token = T.kv_bytes_per_token(spec, r.kv_dtype_bytes, r.tp_size)
    base = E.sglang_memory(spec, rules, free_at_start_bytes=free_at_start, fraction=1.0,
                           dtype_bytes=r.act_bytes, kv_dtype_bytes=r.kv_dtype_bytes, quant=r.quant,
                           tp_size=r.tp_size, chunk_tokens=r.chunk_tokens,
                           max_image_tokens=r.context.max_image_tokens, cuda_graphs=r.cuda_graphs,
                           graph_bs=r.graph_bs)
    weights = base.weights
    act = _engine_activations(spec, r, r.batch)
    graphs = T.cuda_graph_bytes(r.graph_bs) if r.cuda_graphs else 0
    runtime = context + C.SGLANG_METADATA_BYTES + C.SGLANG_POOL_SLACK_BYTES
    margin = T.allocator_margin_bytes(act + graphs)
    free = max(1, free_at_start)
    problems: list[str] = []

    def pool(fraction: float) -> int:
        return int(fraction * free_at_start) - weights - C.SGLANG_POOL_SLACK_BYTES

    if r.sized_kv:
        wanted = r.batch * r.context.max_model_len
        if r.user_fraction is not None:
            fraction = r.user_fraction
            kv_tokens = min(wanted, max(0, pool(fraction)) // per_token)
        else:
            kv_tokens = wanted
            fraction = fraction_up((weights + kv_tokens * per_token + C.SGLANG_POOL_SLACK_BYTES) / free)
        kv = kv_tokens * per_token
    else:
        if r.user_fraction is not None:
            fraction = r.user_fraction
        else:
            default = sglang_default_fraction(hw.total_bytes, r.chunk_tokens, r.graph_bs)
            # SGLang shrinks its own default for a multimodal model (version-dependent rule).
            fraction = round(E.sglang_vlm_fraction(rules, default, False, spec), 3)
        kv = max(0, pool(fraction))
        kv_tokens = kv // per_token
    needed = fraction_up((weights + r.context.max_model_len * per_token + C.SGLANG_POOL_SLACK_BYTES) / free)
    short = _kv_short(kv_tokens, r, f"--mem-fraction-static {needed} or more")
    if short:
        problems.append(short)
        kv_tokens, kv = _one_request(r, per_token)
    return Sizing(_terms(weights, kv, act, graphs, runtime, margin), kv_tokens, fraction, tuple(problems))


def size_vllm(spec: ModelSpec, hw: Hardware, r: Resolved) -> Sizing:
    """vLLM: gpu_memory_utilization × total holds weights, the profiled activation peak, non-torch
    memory and KV (and, from 0.21, the CUDA graphs); the CUDA context sits outside it
    (engine_memory.vllm_memory, rules of the vLLM version the plan assumes)."""
    rules = vllm_rules(C.DEFAULT_VLLM_VERSION)
    context = cuda_context_bytes(hw.name)[0]
    per_token = T.kv_bytes_per_token(spec, r.kv_dtype_bytes, r.tp_size)
    capture = min(C.VLLM_MAX_CAPTURE_SIZE, max(1, r.graph_bs))

    def engine(utilization: float, kv_bytes: Optional[int] = None) -> E.EngineMemory:
        # The plan's command allows one image and no video per prompt, so the profile runs an image.
        return E.vllm_memory(
            spec, rules, total_bytes=hw.total_bytes, utilization=utilization,
            max_model_len=r.context.max_model_len, max_num_batched_tokens=r.chunk_tokens,
            max_num_seqs=r.batch, max_pixels=r.context.max_image_pixels, video_profiled=False,
            dtype_bytes=r.act_bytes, kv_dtype_bytes=r.kv_dtype_bytes, quant=r.quant, tp_size=r.tp_size,
            cuda_graphs=r.cuda_graphs, capture_size=capture, kv_cache_memory_bytes=kv_bytes,
        )

    probe = engine(1.0)
    weights, act, non_torch = probe.weights, probe.activations, probe.non_torch
    graphs = probe.cuda_graphs
    in_budget = non_torch + (graphs if rules.graphs_in_budget else 0)
    runtime = context + non_torch
    margin = T.allocator_margin_bytes(act + graphs)
    problems: list[str] = []
    if r.sized_kv and r.user_fraction is None:
        kv_tokens = r.batch * r.context.max_model_len
        kv = kv_tokens * per_token
        fraction = fraction_up((weights + act + in_budget + kv + margin) / hw.total_bytes)
    else:
        fraction = r.user_fraction or C.VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
        mem = engine(fraction)
        kv_tokens = mem.kv_tokens
        if r.sized_kv:
            kv_tokens = min(kv_tokens, r.batch * r.context.max_model_len)
            kv = kv_tokens * per_token
        else:
            kv = max(0, mem.kv_cache)
    requested = int(fraction * hw.total_bytes)
    free_after_context = hw.free_bytes - context
    if requested > free_after_context:
        problems.append(
            f"vLLM refuses to start: it asks for {fraction} × {gib(hw.total_bytes)} = {gib(requested)} "
            f"but only {gib(max(0, free_after_context))} is free once its CUDA context exists — lower "
            f"--gpu-memory-utilization to {math.floor(max(0, free_after_context) / hw.total_bytes * 100) / 100} "
            f"or free the GPU"
        )
    needed = fraction_up((weights + act + in_budget + r.context.max_model_len * per_token) / hw.total_bytes)
    short = _kv_short(kv_tokens, r, f"--gpu-memory-utilization {needed} or more")
    if short:
        problems.append(short)
        kv_tokens, kv = _one_request(r, per_token)
    return Sizing(_terms(weights, kv, act, graphs, runtime, margin), kv_tokens, fraction, tuple(problems))


SIZERS = {"builtin": size_builtin, "sglang": size_sglang, "vllm": size_vllm}
