"""Engine rules: debugging settings left on, queues that could run, OOM step-downs, silent engines.

Each rule is a pure function (snapshot, history, context) -> list of Advice.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

from mineru_fit.doctor import env_findings
from mineru_fit.monitor.advice import (
    Advice,
    AdvisorContext,
    command_line,
    engine_argv,
    engine_plan,
    flag_value,
    next_level,
    plan_for_gpu,
    start_command,
    with_flag,
)
from mineru_fit.monitor.snapshot import Snapshot
from mineru_fit.planner.constants import SGLANG_DEFAULT_MAX_RUNNING, VLLM_DEFAULT_MAX_NUM_SEQS
from mineru_fit.units import GIB, gib

# Below this KV use a waiting request is not waiting for memory but for a batch slot.
KV_ROOM_RATIO = 0.70
# Raise the batch no further than would fill KV to this share at today's per-request use.
KV_TARGET_RATIO = 0.90
FREE_ROOM_BYTES = 1 * GIB
BATCH_FLAGS = {"sglang": "--max-running-requests", "vllm": "--max-num-seqs", "builtin": "--max-batch-size"}
# What an engine started without the flag allows (the `none` level passes none).
_ENGINE_DEFAULT_BATCH = {"sglang": SGLANG_DEFAULT_MAX_RUNNING, "vllm": VLLM_DEFAULT_MAX_NUM_SEQS}


def launch_blocking(snapshot: Snapshot, history: Sequence[Snapshot], ctx: AdvisorContext) -> list[Advice]:
    """CUDA_LAUNCH_BLOCKING=1 here or in an engine: every kernel launch waits (the doctor's rule)."""
    places = []
    if _blocking(snapshot.environ):
        places.append("this shell")
    places += [f"{e.name} engine (pid {e.record.pid})" for e in snapshot.engines
               if e.record is not None and _blocking(e.environ)]
    if not places:
        return []
    finding = next(f for f in env_findings({"CUDA_LAUNCH_BLOCKING": "1"}) if f.topic == "CUDA_LAUNCH_BLOCKING")
    return [Advice(
        severity="warn", rule="cuda-launch-blocking",
        message=f"CUDA_LAUNCH_BLOCKING=1 in {', '.join(places)}: {finding.message.split(' — ')[0]}",
        action="unset it and restart the engine (no memory is saved by it)", command="unset CUDA_LAUNCH_BLOCKING",
    )]


def queue_with_room(snapshot: Snapshot, history: Sequence[Snapshot], ctx: AdvisorContext) -> list[Advice]:
    """Requests wait while KV (or GPU memory) has room: the batch limit, not memory, holds them back."""
    out = []
    for engine in snapshot.engines:
        waiting = engine.requests_waiting or 0
        if not engine.reachable or waiting < 1:
            continue
        kv = engine.kv_cache_usage
        gpus = snapshot.gpus_of_engine(engine)
        free = min((g.memory.free_bytes for g in gpus), default=None)
        if kv is not None:
            if kv >= KV_ROOM_RATIO:
                continue
        elif free is None or free < FREE_ROOM_BYTES:
            continue
        flag = BATCH_FLAGS.get(engine.name, "--max-batch-size")
        argv = engine_argv(engine, ctx)
        plan = engine_plan(engine, ctx)
        now = _int(flag_value(argv, flag)) or (plan.batch_size if plan is not None and plan.batch_size else None)
        now = now or engine.batch_limit or _ENGINE_DEFAULT_BATCH.get(engine.name) or max(1, engine.requests_running or 0)
        limit = min(now, engine.batch_limit) if engine.batch_limit else now
        if (engine.requests_running or 0) < limit:
            continue  # the batch has free slots: something else (prefill budget, client) holds requests back
        if limit < now:
            continue  # the engine lowered its own batch after an OOM: raising the flag would not help
        target = now + waiting
        if kv is not None and kv > 0:
            # KV use grows with the batch: stop where it would reach 90%.
            target = min(target, math.floor(now * KV_TARGET_RATIO / kv))
        if target <= now:
            continue
        room = f"KV {kv:.0%} used" if kv is not None else f"{gib(free or 0)} free"
        out.append(Advice(
            severity="info", rule="queue-with-room",
            message=f"{engine.name} ({engine.metrics_url}): {waiting} waiting, {engine.requests_running or 0} running, {room}",
            action=f"raise {flag} {now} -> {target} (and the client's max_concurrency to match)",
            command=command_line(with_flag(argv, flag, str(target))) if argv else None,
            engine_url=engine.metrics_url,
        ))
    return out


def oom_events(snapshot: Snapshot, history: Sequence[Snapshot], ctx: AdvisorContext) -> list[Advice]:
    """The built-in server had to split, shrink or reject work for lack of memory: step down a level."""
    out = []
    for engine in snapshot.engines:
        if engine.oom_total <= 0:
            continue
        counts = ", ".join(f"{action} {count}" for action, count in sorted(engine.oom_events.items()) if count)
        level = engine.current_level
        step = next_level(level)
        command = None
        if step is None:
            action = ("already at extreme: use the flash tier for born-digital PDFs or a GPU with more free memory"
                      if level == "extreme" else "step down one level (mineru-fit plan --level ...)")
        else:
            action = f"step down {level} -> {step}"
            gpus = snapshot.gpus_of_engine(engine)
            plan = engine_plan(engine, ctx)
            if gpus:
                gpu = min(gpus, key=lambda g: g.memory.free_bytes)
                stepped = plan_for_gpu(snapshot, gpu, ctx, engine=engine.name,
                                       model=plan.model if plan else engine.model, level=step)
                if stepped is not None:
                    action += f" (predicted peak {gib(stepped.predicted_peak_bytes)})"
                    command = start_command(snapshot, gpu, stepped)
        rejected = engine.oom_events.get("rejected", 0)
        out.append(Advice(
            severity="critical" if rejected else "warn", rule="oom-events",
            message=f"{engine.name}{' ' + level if level else ''} ({engine.metrics_url}): {engine.oom_total} out-of-memory events ({counts})"
                    + (f" — {rejected} requests rejected" if rejected else ""),
            action=action, command=command, engine_url=engine.metrics_url,
        ))
    return out


def unreachable(snapshot: Snapshot, history: Sequence[Snapshot], ctx: AdvisorContext) -> list[Advice]:
    """An engine we were told about does not answer its /metrics."""
    out = []
    for engine in snapshot.engines:
        if engine.reachable:
            continue
        error = engine.error or ""
        if error.startswith("bad metrics"):
            action = "this URL does not serve Prometheus text — point --engine-url at the engine's /metrics"
        elif "HTTP 404" in error and engine.name == "sglang":
            action = "SGLang serves /metrics only with --enable-metrics — restart it with that flag"
        elif engine.record is not None:
            action = (f"pid {engine.record.pid} runs but does not answer: still loading, or hung — "
                      f"check {engine.record.base_url}/health and the engine's log")
        else:
            action = "check the URL and that the engine runs (mineru-fit serve ...)"
        out.append(Advice(
            severity="warn", rule="engine-unreachable",
            message=f"{engine.name} at {engine.metrics_url}: {error}", action=action,
            command=f"curl -s {engine.metrics_url}", engine_url=engine.metrics_url,
        ))
    return out


def _blocking(environ: Mapping[str, str]) -> bool:
    return any(f.topic == "CUDA_LAUNCH_BLOCKING" for f in env_findings(environ))


def _int(text: Optional[str]) -> Optional[int]:
    return int(text) if text is not None and text.isdigit() else None
