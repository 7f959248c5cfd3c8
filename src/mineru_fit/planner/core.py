"""From a request, hardware and model spec to one Plan per level, and the level `auto` picks."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from mineru_fit.errors import PlanInputError
from mineru_fit.models.spec import ModelSpec
from mineru_fit.planner import commands
from mineru_fit.planner import constants as C
from mineru_fit.planner.calibration import cuda_context_bytes
from mineru_fit.planner.equations import SIZERS, Resolved, Sizing
from mineru_fit.planner.inputs import Hardware, PlanRequest
from mineru_fit.planner.levels import LEVEL_INTENT, LEVEL_KNOBS, MODEL_LEVELS, Level, Quant
from mineru_fit.planner.plan import TERM_KEYS, DeviceSummary, Plan, PlanReport
from mineru_fit.planner.workload import split_context
from mineru_fit.settings import DEFAULT_ALLOC_CONF
from mineru_fit.units import gib


def validate(request: PlanRequest, hw: Hardware, spec: ModelSpec) -> None:
    """Refuse what cannot run at all, before any level is sized."""
    engine = request.engine
    if engine != "builtin" and not hw.is_cuda:
        raise PlanInputError(
            f"{engine} needs a CUDA GPU and none was found — use --engine builtin (runs on the CPU), "
            "or plan for a card with --vram GB or --simulate FILE"
        )
    if request.tp_size > 1 and engine == "builtin":
        raise PlanInputError(
            "the built-in engine does not split one model across GPUs — use --dp-size "
            "(one replica per GPU) or --engine sglang/vllm for --tp-size"
        )
    gpus_needed = request.tp_size * request.dp_size
    if hw.is_cuda and gpus_needed > hw.gpu_count:
        where = f"--gpus gives {hw.gpu_count}" if hw.hypothetical else f"{hw.gpu_count} {'is' if hw.gpu_count == 1 else 'are'} available"
        raise PlanInputError(
            f"--tp-size {request.tp_size} × --dp-size {request.dp_size} needs {gpus_needed} GPUs but {where} — "
            + (f"use --gpus {gpus_needed} or lower them" if hw.hypothetical else "lower them")
        )
    if not hw.is_cuda and gpus_needed > 1:
        raise PlanInputError(
            f"--tp-size/--dp-size spread the model over GPUs and no CUDA GPU was found — drop them, "
            "or plan for cards with --vram GB --gpus N"
        )
    if request.tp_size > 1:
        heads = spec.text.num_heads
        if heads % request.tp_size:
            options = ", ".join(str(d) for d in range(1, heads + 1) if heads % d == 0)
            raise PlanInputError(
                f"--tp-size {request.tp_size} does not divide the model's {heads} attention heads — use {options}"
            )
    if request.dtype == "bfloat16" and not hw.supports_bf16:
        raise PlanInputError(
            f"bfloat16 needs compute capability 8.0 or newer; {hw.name} has "
            f"{'.'.join(map(str, hw.compute_capability or ()))} — use --dtype float16"
        )
    if request.kv_cache_dtype == "fp8" and engine == "builtin":
        raise PlanInputError(
            "the built-in engine keeps its KV cache in the compute dtype — drop --kv-cache-dtype "
            "or use --engine sglang/vllm"
        )
    if request.load_in_8bit and engine != "builtin" and _engine_quant(engine, 8, hw) is Quant.none:
        cc = ".".join(map(str, hw.compute_capability or ()))
        raise PlanInputError(
            f"{engine} has no 8-bit weight path on compute capability {cc} — use --load-in-4bit "
            f"or --engine builtin (bitsandbytes int8)"
        )
    if request.max_model_len is not None:
        longest = spec.text.max_position_embeddings
        if request.max_model_len > longest:
            raise PlanInputError(
                f"--max-model-len {request.max_model_len} is longer than the model's {longest}-token context "
                f"— use at most {longest}"
            )
        split_context(spec, request.max_model_len)  # raises with the shortest usable length


def _dtype(request: PlanRequest, hw: Hardware) -> str:
    if request.dtype != "auto":
        return request.dtype
    if hw.device == "cpu":
        return "float32"
    return "bfloat16" if hw.supports_bf16 else "float16"


def _engine_quant(engine: str, bits: int, hw: Hardware) -> Quant:
    if bits == 16:
        return Quant.none
    if bits == 4:
        return Quant.nf4
    if engine == "builtin":
        return Quant.int8
    cc = hw.compute_capability
    if engine == "vllm":  # fp8 weight-only kernels (Marlin) from Ampere on
        return Quant.fp8 if cc is None or cc >= (8, 0) else Quant.none
    return Quant.fp8 if hw.supports_fp8 else Quant.none


def _resolve(spec: ModelSpec, hw: Hardware, request: PlanRequest, level: Level,
             prev: Optional[Resolved], prev_kv_tokens: int, notes: list[str]) -> Resolved:
    knobs = LEVEL_KNOBS[level]
    engine = request.engine
    bits = request.forced_weight_bits or knobs.weight_bits
    quant = _engine_quant(engine, bits, hw)
    if bits < 16 and quant is Quant.none:
        notes.append(f"{engine} has no {bits}-bit weight path on this GPU: weights stay 16-bit")
    dtype = _dtype(request, hw)
    kv_fp8 = engine != "builtin" and hw.supports_fp8 and (knobs.kv_fp8 or request.kv_cache_dtype == "fp8")
    if knobs.kv_fp8 and engine == "builtin":
        notes.append("the built-in engine keeps KV in the compute dtype")
    if request.memory_fraction is not None and not hw.is_cuda:
        notes.append(f"--mem-fraction-static {request.memory_fraction:g} is a share of GPU memory: on the CPU "
                     "it does not apply (the budget is RAM)")
    full_len = spec.text.max_position_embeddings
    max_len = request.max_model_len or min(knobs.max_model_len or full_len, full_len)
    concurrency = request.concurrency or C.DEFAULT_CONCURRENCY
    if level is Level.none and engine != "builtin":
        batch = C.SGLANG_DEFAULT_MAX_RUNNING if engine == "sglang" else C.VLLM_DEFAULT_MAX_NUM_SEQS
    else:
        batch = max(1, concurrency // max(1, request.dp_size) // knobs.batch_divisor)
        if knobs.batch_max is not None:
            batch = min(batch, knobs.batch_max)
    chunk = knobs.chunk_tokens or (
        C.SMALL_CARD_CHUNK_TOKENS if hw.total_bytes < C.SGLANG_SMALL_CARD_BYTES else C.ENGINE_DEFAULT_CHUNK_TOKENS
    )
    if knobs.sized_kv:
        graph_bs = batch
    elif engine == "sglang":
        graph_bs = C.SGLANG_SMALL_CARD_GRAPH_BS if hw.total_bytes < C.SGLANG_SMALL_CARD_BYTES else C.SGLANG_LARGE_CARD_GRAPH_BS
    else:
        graph_bs = min(batch, 512)
    if prev is not None:  # a more aggressive level never asks for more than the one before it
        max_len = min(max_len, prev.context.max_model_len)
        batch = min(batch, prev.batch)
        chunk = min(chunk, prev.chunk_tokens)
        graph_bs = min(graph_bs, prev.graph_bs)
    context = split_context(spec, max_len)
    if prev is not None and knobs.sized_kv:
        # No more KV either: a batch that needs more tokens than the previous level held shrinks.
        batch = max(1, min(batch, prev_kv_tokens // context.max_model_len))
        graph_bs = min(graph_bs, batch)
    # vLLM and SGLang need a whole image inside one prefill chunk.
    chunk = max(chunk, context.max_image_tokens + C.PROMPT_TOKENS)
    return Resolved(
        engine=engine, level=level, dtype=dtype, quant=quant, kv_dtype="fp8" if kv_fp8 else dtype,
        context=context, batch=batch, chunk_tokens=chunk,
        cuda_graphs=knobs.cuda_graphs and hw.is_cuda, graph_bs=graph_bs,
        sized_kv=knobs.sized_kv, user_fraction=request.memory_fraction,
        tp_size=request.tp_size, dp_size=request.dp_size,
    )


def _overrides(request: PlanRequest) -> str:
    """The user's flags that every level takes as given, whatever the level's own intent says."""
    given = [f"{request.forced_weight_bits}-bit weights" if request.forced_weight_bits else "",
             f"context {request.max_model_len}" if request.max_model_len else "",
             f"memory share {request.memory_fraction:g}" if request.memory_fraction is not None else ""]
    given = [g for g in given if g]
    return f" — your flags override: {', '.join(given)}" if given else ""


def _fits(hw: Hardware, sizing: Sizing) -> bool:
    return not sizing.problems and sizing.peak_bytes <= hw.budget_bytes * (1 - C.FIT_HEADROOM_FRACTION)


def _size(spec: ModelSpec, hw: Hardware, r: Resolved, shrink: bool) -> tuple[Resolved, Sizing]:
    """Size the level; levels that may shrink take the largest batch that fits (at least 1)."""
    sizer = SIZERS[r.engine]
    sizing = sizer(spec, hw, r)
    if not shrink or _fits(hw, sizing) or r.batch == 1:
        return r, sizing
    lo, hi = 1, r.batch  # fits(lo) unknown; memory grows with the batch, so bisect
    best = (replace(r, batch=1, graph_bs=min(r.graph_bs, 1)), None)
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = replace(r, batch=mid, graph_bs=min(r.graph_bs, mid))
        s = sizer(spec, hw, cand)
        if _fits(hw, s):
            best = (cand, s)
            lo = mid + 1
        else:
            hi = mid - 1
    cand, s = best
    return cand, s if s is not None else sizer(spec, hw, cand)


def _device_summary(hw: Hardware) -> DeviceSummary:
    return DeviceSummary(
        device=hw.device, name=hw.name, total_bytes=hw.total_bytes, free_bytes=hw.free_bytes,
        gpu_count=hw.gpu_count, compute_capability=hw.compute_capability, budget_reason=hw.budget_reason,
    )


def _command(request: PlanRequest, r: Resolved, s: Sizing, hw: Hardware,
             user_alloc_conf: Optional[str]) -> tuple[list[str], dict[str, str]]:
    args = (request.model, request.host, request.port, r, s)
    if r.engine == "builtin":
        return commands.builtin_command(*args, hw.device, user_alloc_conf)
    if r.engine == "sglang":
        return commands.sglang_command(*args, user_alloc_conf)
    return commands.vllm_command(*args, user_alloc_conf)


def _flash_plan(request: PlanRequest, hw: Hardware) -> Plan:
    argv, env = commands.flash_command()
    return Plan(
        engine="flash", level=Level.flash.value, fits=True, budget_bytes=hw.budget_bytes,
        predicted_peak_bytes=0, terms=dict.fromkeys(TERM_KEYS, 0),
        kv_cache_tokens=0, max_model_len=0, max_image_pixels=0, max_new_tokens=0, batch_size=0,
        dtype="none", weight_format="none", kv_cache_dtype="none", memory_fraction=None,
        model="none", device=_device_summary(hw), argv=argv, env=env,
        notes=[LEVEL_INTENT[Level.flash], "born-digital PDFs only: scanned pages need a model level"],
    )


def plan_levels(spec: ModelSpec, hw: Hardware, request: PlanRequest,
                user_alloc_conf: Optional[str] = None) -> list[Plan]:
    """A plan for every level, least to most aggressive, flash last."""
    validate(request, hw, spec)
    plans: list[Plan] = []
    prev: Optional[Resolved] = None
    prev_kv_tokens = 0
    for level in MODEL_LEVELS:
        notes: list[str] = [LEVEL_INTENT[level] + _overrides(request)]
        asked = _resolve(spec, hw, request, level, prev, prev_kv_tokens, notes)
        r, s = _size(spec, hw, asked, LEVEL_KNOBS[level].shrink_to_fit)
        if r.batch < asked.batch:
            notes.append(f"batch lowered from {asked.batch} to {r.batch} to fit the budget")
        if user_alloc_conf and hw.is_cuda:
            notes.append(f"PYTORCH_CUDA_ALLOC_CONF={user_alloc_conf} is yours and passed on as given (unset, the "
                         f"built-in engine gets {DEFAULT_ALLOC_CONF}; `mineru-fit doctor` explains both)")
        if hw.is_cuda and hw.compute_capability is None:
            notes.append("GPU generation unknown: assuming bf16 and fp8 support (compute capability 8.9+)")
        if hw.is_cuda:
            source = cuda_context_bytes(hw.name)[1]
            notes.append(f"CUDA context measured on this GPU class ({source})" if source else
                         "runtime terms are estimates: no measurement for this GPU class yet (docs/memory-model.md)")
        argv, env = _command(request, r, s, hw, user_alloc_conf)
        plans.append(Plan(
            engine=r.engine, level=level.value, fits=_fits(hw, s), budget_bytes=hw.budget_bytes,
            predicted_peak_bytes=s.peak_bytes, terms=s.terms, kv_cache_tokens=int(s.kv_tokens),
            max_model_len=r.context.max_model_len, max_image_pixels=r.context.max_image_pixels,
            max_new_tokens=r.context.max_new_tokens, batch_size=r.batch, dtype=r.dtype,
            weight_format=r.quant.value, kv_cache_dtype=r.kv_dtype, memory_fraction=s.fraction,
            tp_size=r.tp_size, dp_size=r.dp_size, model=request.model, device=_device_summary(hw),
            argv=argv, env=env, notes=notes, problems=list(s.problems),
            warnings=[w for w in (r.context.degradation(),) if w],
        ))
        prev, prev_kv_tokens = r, s.kv_tokens
    plans.append(_flash_plan(request, hw))
    return plans


def choose(plans: list[Plan], hw: Hardware, requested: str = "auto") -> tuple[Plan, str]:
    """The level asked for, or the least aggressive level that fits (flash when none does)."""
    by_level = {p.level: p for p in plans}
    if requested != "auto":
        plan = by_level[requested]
        why = "asked for with --level"
        if not plan.fits:
            why += f"; it does NOT fit: {_overflow(plan, hw)}"
        return plan, why
    headroom = f"{C.FIT_HEADROOM_FRACTION:.0%} headroom"
    skipped: list[str] = []
    for plan in plans:
        if plan.fits:
            why = f"least aggressive level that fits {gib(hw.budget_bytes)} ({hw.budget_reason}) with {headroom}"
            if skipped:
                why += "; " + "; ".join(skipped)
            return plan, why
        skipped.append(f"{plan.level}: {_overflow(plan, hw)}")
    raise AssertionError("flash always fits")  # pragma: no cover


def _overflow(plan: Plan, hw: Hardware) -> str:
    if plan.problems:
        return plan.problems[0]
    return f"needs {gib(plan.predicted_peak_bytes)} > {gib(hw.budget_bytes * (1 - C.FIT_HEADROOM_FRACTION))}"


def make_report(spec: ModelSpec, hw: Hardware, request: PlanRequest,
                user_alloc_conf: Optional[str] = None) -> PlanReport:
    """Plans for every level of one engine and the one to use."""
    plans = plan_levels(spec, hw, request, user_alloc_conf)
    chosen, reason = choose(plans, hw, request.level)
    return PlanReport(engine=request.engine, chosen_level=chosen.level, reason=reason, plan=chosen, levels=plans)
