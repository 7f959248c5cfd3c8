"""Memory rules: KV room to grow, co-tenants shrinking the budget, memory pinned at the limit, heat.

Each rule is a pure function (snapshot, history, context) -> list of Advice.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from mineru_fit.devices.types import Gpu
from mineru_fit.monitor.advice import (
    Advice,
    AdvisorContext,
    command_line,
    engine_argv,
    engine_plan,
    flag_value,
    float_flag,
    level_rank,
    next_level,
    plan_for_gpu,
    start_command,
    share_flag,
    with_flag,
)
from mineru_fit.monitor.snapshot import EngineState, Snapshot
from mineru_fit.planner import Plan
from mineru_fit.planner.constants import FIT_HEADROOM_FRACTION
from mineru_fit.units import GIB, MIB, gib, human

# KV this full means new requests wait for a slot (SGLang/vLLM preempt above ~95%).
KV_HIGH_RATIO = 0.90
# Never hand the KV cache the last of the memory: activations and fragmentation need room too.
KV_GROW_RESERVE_BYTES = 1 * GIB
KV_GROW_MIN_BYTES = 512 * MIB
MAX_SHARE = 0.95
# A process this big on a GPU changes what fits (desktop compositors stay below it).
CO_TENANT_MIN_BYTES = 512 * MIB
# Memory in use that NVML attributes to nobody (another container) counts from this much.
HIDDEN_USE_MIN_BYTES = 1 * GIB
NEAR_LIMIT_FRACTION = 0.03
NEAR_LIMIT_WINDOW_S = 60.0
HOT_C = 85
CRITICAL_C = 90
# Capping power here cools a card by several degrees for a few percent of throughput.
POWER_CAP_FRACTION = 0.8


def kv_headroom(snapshot: Snapshot, history: Sequence[Snapshot], ctx: AdvisorContext) -> list[Advice]:
    """KV cache nearly full while the GPU has free memory: give the KV pool more of it."""
    out = []
    for engine in snapshot.engines:
        if not engine.reachable or engine.kv_cache_usage is None or engine.kv_cache_usage < KV_HIGH_RATIO:
            continue
        gpu = _tightest(snapshot.gpus_of_engine(engine))
        if gpu is None:
            continue
        total = gpu.memory.total_bytes
        grow = gpu.memory.free_bytes - max(KV_GROW_RESERVE_BYTES, int(total * FIT_HEADROOM_FRACTION))
        if grow < KV_GROW_MIN_BYTES or total <= 0:
            continue
        argv = engine_argv(engine, ctx)
        plan = engine_plan(engine, ctx)
        kv_fp8 = (plan is not None and plan.kv_cache_dtype == "fp8") or (flag_value(argv, "--kv-cache-dtype") or "").startswith("fp8")
        tokens = grow // ctx.spec.kv_bytes_per_token(1 if kv_fp8 else 2)
        flag = share_flag(engine.name)
        now = float_flag(argv, flag) or engine.memory_fraction or (plan.memory_fraction if plan else None)
        if now is not None:
            target = min(MAX_SHARE, math.floor((now + grow / total) * 100) / 100)
            if target <= now:
                continue
            action = f"raise {flag} {now:g} -> {target:g} (about +{tokens:,} KV tokens)"
            argv = with_flag(argv, flag, f"{target:g}") if argv else argv
        else:
            action = f"raise {flag} by {math.floor(grow / total * 100) / 100:g} (about {gib(grow)}, +{tokens:,} KV tokens)"
        if engine.name == "builtin":
            # The built-in engine's KV is batch × context: more memory only helps through a larger batch.
            argv, action = _builtin_batch(argv, action, engine, plan, tokens)
        # Flags that pin the KV size would cancel a larger share: raise them with it.
        pinned_tokens = flag_value(argv, "--max-total-tokens")
        if pinned_tokens and pinned_tokens.isdigit():
            argv = with_flag(argv, "--max-total-tokens", str(int(pinned_tokens) + tokens))
            action += f" and --max-total-tokens {pinned_tokens} -> {int(pinned_tokens) + tokens}"
        pinned_bytes = flag_value(argv, "--kv-cache-memory-bytes")
        if pinned_bytes and pinned_bytes.isdigit():
            argv = with_flag(argv, "--kv-cache-memory-bytes", str(int(pinned_bytes) + grow))
            action += f" and --kv-cache-memory-bytes {pinned_bytes} -> {int(pinned_bytes) + grow}"
        out.append(Advice(
            severity="warn", rule="kv-headroom",
            message=f"{_label(engine)}: KV cache {engine.kv_cache_usage:.0%} used, {gib(gpu.memory.free_bytes)} free on GPU {gpu.index}",
            action=action, command=command_line(argv) if argv else None,
            gpu_index=gpu.index, engine_url=engine.metrics_url,
        ))
    return out


def co_tenant(snapshot: Snapshot, history: Sequence[Snapshot], ctx: AdvisorContext) -> list[Advice]:
    """Another process holds memory: the budget is smaller than the card, so say what fits now."""
    out = []
    for gpu in snapshot.gpus:
        if gpu.mig_devices:
            continue  # CUDA runs on one MIG instance, not the whole card: the inventory warns what to set
        rows = snapshot.processes_on(gpu.index)
        others = [p for p in rows if p.engine is None and (p.used_bytes or 0) >= CO_TENANT_MIN_BYTES]
        holders = [f"{p.name or '?'} (pid {p.pid}) holds {human(p.used_bytes or 0)}" for p in others]
        if not rows and gpu.memory.used_bytes >= HIDDEN_USE_MIN_BYTES:
            holders.append(f"processes NVML cannot list (another container?) hold {human(gpu.memory.used_bytes)}")
        if not holders:
            continue
        ours = next((p.engine for p in rows if p.engine is not None), None)
        engine = _engine_by_pid(snapshot, ours.pid) if ours else None
        current = engine_plan(engine, ctx) if engine is not None else ctx.plan
        if current is not None and current.engine == "flash":
            current = None  # a model-free plan says nothing about which engine or model to size
        engine_name = ours.engine if ours else (current.engine if current is not None else "builtin")
        plan = plan_for_gpu(snapshot, gpu, ctx, engine=engine_name, model=current.model if current is not None else None)
        if plan is None:
            continue
        now_level = ours.level if ours else (current.level if current is not None else None)
        action = f"auto picks {plan.level} for {engine_name} on that budget (predicted peak {gib(plan.predicted_peak_bytes)})"
        severity = "info"
        if now_level is not None and now_level != plan.level:
            action += f" — you run {now_level}"
            now_rank, auto_rank = level_rank(now_level), level_rank(plan.level)
            if now_rank is not None and auto_rank is not None and now_rank < auto_rank:
                severity = "warn"  # what runs now needs more than the budget allows: an OOM waiting to happen
        out.append(Advice(
            severity=severity, rule="co-tenant",
            message=f"GPU {gpu.index}: {'; '.join(holders)} — budget now {gib(plan.budget_bytes)} of {gib(gpu.memory.total_bytes)}",
            action=action, command=start_command(snapshot, gpu, plan), gpu_index=gpu.index,
        ))
    return out


def near_limit(snapshot: Snapshot, history: Sequence[Snapshot], ctx: AdvisorContext) -> list[Advice]:
    """Less than 3% of the GPU free (or the built-in engine's reserve within 3% of its cap) for a minute or more."""
    out = []
    for position, gpu in enumerate(snapshot.gpus):
        total = gpu.memory.total_bytes
        # Free memory, not "used": on NVML v2 the driver reserve is in neither, and it is not ours to use.
        points = [(p.time_s, p.free_bytes <= total * NEAR_LIMIT_FRACTION) for p in snapshot.history_of(position)]
        lasted = streak_s(points, snapshot.time_s)
        if total <= 0 or lasted < NEAR_LIMIT_WINDOW_S:
            continue
        out.append(_near_limit_advice(
            snapshot, ctx, gpu, None, lasted,
            f"GPU {gpu.index}: only {human(gpu.memory.free_bytes)} of {gib(total)} free "
            f"({gpu.memory.free_bytes / total:.1%}) for {lasted:.0f} s",
        ))
    for engine in snapshot.engines:
        if not engine.memory_cap_bytes or engine.reserved_bytes is None:
            continue
        cap = engine.memory_cap_bytes
        seen = [(s.time_s, e) for s in history for e in s.engines if e.metrics_url == engine.metrics_url]
        seen.append((snapshot.time_s, engine))
        points = [(t, (e.reserved_bytes or 0) >= cap * (1 - NEAR_LIMIT_FRACTION)) for t, e in seen]
        lasted = streak_s(points, snapshot.time_s)
        if lasted < NEAR_LIMIT_WINDOW_S:
            continue
        gpu = _tightest(snapshot.gpus_of_engine(engine))
        out.append(_near_limit_advice(
            snapshot, ctx, gpu, engine, lasted,
            f"{_label(engine)}: {gib(engine.reserved_bytes)} reserved of its {gib(cap)} cap for {lasted:.0f} s",
        ))
    return out


def hot_gpu(snapshot: Snapshot, history: Sequence[Snapshot], ctx: AdvisorContext) -> list[Advice]:
    """GPU at or above 85 °C: clocks are about to throttle."""
    out = []
    for gpu in snapshot.gpus:
        if gpu.temperature_c is None or gpu.temperature_c < HOT_C:
            continue
        command = None
        action = "check the fans and airflow"
        if gpu.power_limit_w:
            cap_w = int(gpu.power_limit_w * POWER_CAP_FRACTION)
            action += f", or cap power {gpu.power_limit_w:.0f} -> {cap_w} W (a few % slower, several °C cooler)"
            command = f"sudo nvidia-smi -i {gpu.nvml_index if gpu.nvml_index is not None else gpu.index} -pl {cap_w}"
        out.append(Advice(
            severity="critical" if gpu.temperature_c >= CRITICAL_C else "warn", rule="gpu-hot",
            message=f"GPU {gpu.index}: {gpu.temperature_c} °C (≥ {HOT_C} °C): throttling risk",
            action=action, command=command, gpu_index=gpu.index,
        ))
    return out


def _builtin_batch(argv: list[str], action: str, engine: EngineState, plan: Optional[Plan],
                   tokens: int) -> tuple[list[str], str]:
    context = engine.max_model_len or _digits(flag_value(argv, "--max-model-len")) or (plan.max_model_len if plan else None)
    batch = _digits(flag_value(argv, "--max-batch-size")) or (plan.batch_size if plan else None)
    if not context or not batch or tokens // context < 1:
        return argv, action
    more = batch + tokens // context
    action += f" and --max-batch-size {batch} -> {more}"
    return (with_flag(argv, "--max-batch-size", str(more)) if argv else argv), action


def _digits(text: Optional[str]) -> Optional[int]:
    return int(text) if text is not None and text.isdigit() else None


def streak_s(points: Sequence[tuple[float, bool]], now_s: float) -> float:
    """How long the condition has held without a break, from timed samples (oldest first); 0 if not now."""
    if not points or not points[-1][1]:
        return 0.0
    start = points[-1][0]
    for time_s, holds in reversed(points):
        if not holds:
            break
        start = time_s
    return now_s - start


def _near_limit_advice(snapshot: Snapshot, ctx: AdvisorContext, gpu: Optional[Gpu], engine: Optional[EngineState],
                       lasted: float, message: str) -> Advice:
    ours = engine or _engine_on(snapshot, gpu)
    level = ours.current_level if ours is not None else None
    step = next_level(level)
    command = None
    if ours is not None and step is not None and gpu is not None:
        plan = engine_plan(ours, ctx)
        stepped = plan_for_gpu(snapshot, gpu, ctx, engine=ours.name, model=plan.model if plan else None, level=step)
        action = f"one large page from an OOM: step down {level} -> {step}"
        if stepped is not None:
            action += f" (predicted peak {gib(stepped.predicted_peak_bytes)})"
            command = start_command(snapshot, gpu, stepped)
    else:
        headroom = gib(gpu.memory.total_bytes * NEAR_LIMIT_FRACTION) if gpu is not None else "3%"
        action = f"one large page from an OOM: keep at least {headroom} free — stop other GPU processes or plan a smaller level"
        command = "mineru-fit plan"
    return Advice(severity="critical", rule="near-limit", message=message, action=action, command=command,
                  gpu_index=gpu.index if gpu is not None else None,
                  engine_url=ours.metrics_url if ours is not None else None)


def _tightest(gpus: Sequence[Gpu]) -> Optional[Gpu]:
    return min(gpus, key=lambda g: g.memory.free_bytes) if gpus else None


def _engine_by_pid(snapshot: Snapshot, pid: int) -> Optional[EngineState]:
    return next((e for e in snapshot.engines if e.record is not None and e.record.pid == pid), None)


def _engine_on(snapshot: Snapshot, gpu: Optional[Gpu]) -> Optional[EngineState]:
    if gpu is None:
        return None
    return next((e for e in snapshot.engines if gpu in snapshot.gpus_of_engine(e)), None)


def _label(engine: EngineState) -> str:
    level = engine.current_level
    return f"{engine.name}{' ' + level if level else ''} ({engine.metrics_url})"
