"""Advice values and what every rule shares: the context, argv edits, plans for a GPU's budget."""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from typing import Optional, Sequence

from pydantic import ValidationError

from mineru_fit.devices.types import Gpu
from mineru_fit.errors import MineruFitError
from mineru_fit.models import ModelSpec, default_spec
from mineru_fit.monitor.snapshot import EngineState, Snapshot
from mineru_fit.planner import Hardware, Plan, PlanRequest, make_report
from mineru_fit.planner.levels import MODEL_LEVELS, Level

logger = logging.getLogger(__name__)

SEVERITIES = ("critical", "warn", "info")  # most urgent first


@dataclass(frozen=True)
class Advice:
    """One thing to change: what is wrong (message), what to do with numbers (action), how (command)."""

    severity: str  # critical | warn | info
    rule: str
    message: str
    action: str
    command: Optional[str] = None
    gpu_index: Optional[int] = None
    engine_url: Optional[str] = None


@dataclass(frozen=True)
class AdvisorContext:
    """What the rules know beyond snapshots: the plan the user runs, the model, the settings."""

    plan: Optional[Plan] = None
    spec: ModelSpec = field(default_factory=default_spec)
    virtual_vram_bytes: Optional[int] = None
    user_alloc_conf: Optional[str] = None


def engine_plan(engine: EngineState, ctx: AdvisorContext) -> Optional[Plan]:
    """The engine's plan: from its run record, else the one given if it is for this engine."""
    if engine.record is not None and engine.record.plan:
        try:
            return Plan.model_validate(engine.record.plan)
        except ValidationError:
            logger.info("run record of pid %s holds an unreadable plan", engine.record.pid)
    if ctx.plan is not None and (ctx.plan.engine == engine.name or engine.name == "unknown"):
        return ctx.plan
    return None


def engine_argv(engine: EngineState, ctx: AdvisorContext) -> list[str]:
    """How the engine was started, when we know: its run record, else its plan."""
    if engine.record is not None and engine.record.argv:
        return list(engine.record.argv)
    plan = engine_plan(engine, ctx)
    return list(plan.argv) if plan is not None else []


def flag_value(argv: Sequence[str], *names: str) -> Optional[str]:
    """The value of the first of `names` in argv ("--flag v" or "--flag=v"); the last occurrence wins."""
    found: Optional[str] = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


def float_flag(argv: Sequence[str], *names: str) -> Optional[float]:
    value = flag_value(argv, *names)
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def with_flag(argv: Sequence[str], name: str, value: str) -> list[str]:
    """argv with `name` set to `value`: replaced where it is, appended where it is not."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == name and i + 1 < len(out):
            out[i + 1] = value
            return out
        if arg.startswith(name + "="):
            out[i] = f"{name}={value}"
            return out
    return out + [name, value]


def command_line(argv: Sequence[str], env: Optional[dict[str, str]] = None) -> str:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return f"{prefix} {shlex.join(argv)}".strip()


def share_flag(engine_name: str) -> str:
    """The memory-share flag as this engine spells it."""
    return "--gpu-memory-utilization" if engine_name == "vllm" else "--mem-fraction-static"


def next_level(level: Optional[str]) -> Optional[str]:
    """The next more aggressive model level; None past extreme (or for an unknown level)."""
    names = [lv.value for lv in MODEL_LEVELS]
    if level not in names:
        return None
    position = names.index(level)
    return names[position + 1] if position + 1 < len(names) else None


def level_rank(level: Optional[str]) -> Optional[int]:
    try:
        return Level(level).rank if level is not None else None
    except ValueError:
        return None


def start_command(snapshot: Snapshot, gpu: Gpu, plan: Plan) -> str:
    """The plan's command line, pinned to this GPU when the machine has several."""
    env = dict(plan.env)
    if len(snapshot.gpus) > 1:
        # The UUID names one GPU whatever CUDA_DEVICE_ORDER is; an index may not.
        env = {"CUDA_VISIBLE_DEVICES": gpu.uuid or str(gpu.nvml_index if gpu.nvml_index is not None else gpu.index), **env}
    return command_line(plan.argv, env)


def ours_on(snapshot: Snapshot, gpu: Gpu) -> int:
    """Bytes our engines' processes hold on this GPU (memory they would give back on a restart)."""
    return sum(p.used_bytes or 0 for p in snapshot.processes_on(gpu.index) if p.engine is not None)


def plan_for_gpu(snapshot: Snapshot, gpu: Gpu, ctx: AdvisorContext, *, engine: str, model: Optional[str],
                 level: str = "auto") -> Optional[Plan]:
    """The plan for this GPU's budget now (free memory plus what our engines hold); None if it cannot be made."""
    hw = Hardware.from_gpu(
        name=gpu.name,
        total_bytes=gpu.memory.total_bytes,
        free_bytes=min(gpu.memory.total_bytes, gpu.memory.free_bytes + ours_on(snapshot, gpu)),
        gpu_count=max(1, len(snapshot.gpus)),
        compute_capability=gpu.compute_capability,
        virtual_vram_bytes=ctx.virtual_vram_bytes,
    )
    fields: dict[str, object] = {"engine": engine if engine in ("builtin", "sglang", "vllm") else "builtin", "level": level}
    if model:
        fields["model"] = model
    try:
        return make_report(ctx.spec, hw, PlanRequest(**fields), user_alloc_conf=ctx.user_alloc_conf).plan
    except (MineruFitError, ValidationError) as exc:
        logger.info("no plan for GPU %s: %s", gpu.index, exc)
        return None
