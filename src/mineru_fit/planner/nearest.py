"""When no model level holds what was asked: one short line naming the nearest value that works.

The user's own flags are relaxed one at a time, least surprising first — a larger memory share,
then a shorter context, then 4-bit weights — and the first value with which some level fits is
named (or a larger MINERU_VIRTUAL_VRAM_SIZE when that caps the budget). Only what the user set is moved, so the answer reads as "your command, with this
one number changed".
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

from mineru_fit.models.spec import ModelSpec
from mineru_fit.planner import constants as C
from mineru_fit.planner.core import make_report
from mineru_fit.planner.inputs import Hardware, PlanRequest
from mineru_fit.planner.plan import Plan, PlanReport
from mineru_fit.planner.workload import min_model_len
from mineru_fit.units import GIB, gib


def _fitting(spec: ModelSpec, hw: Hardware, request: PlanRequest) -> Optional[Plan]:
    """The plan auto would pick for `request`, or None when only flash fits."""
    report = make_report(spec, hw, request.model_copy(update={"level": "auto"}))
    return None if report.plan.level == "flash" else report.plan


def _share(spec: ModelSpec, hw: Hardware, request: PlanRequest) -> Optional[tuple[str, Plan]]:
    given = request.memory_fraction
    if given is None:
        return None
    name = "--mem-fraction-static" if request.mem_fraction_static is not None else "--gpu-memory-utilization"
    steps = round(given / C.FRACTION_STEP)
    for step in range(steps + 1, round(1 / C.FRACTION_STEP) + 1):
        share = round(step * C.FRACTION_STEP, 2)
        key = "mem_fraction_static" if name == "--mem-fraction-static" else "gpu_memory_utilization"
        plan = _fitting(spec, hw, request.model_copy(update={key: share}))
        if plan is not None:
            return f"{name} {share:g}", plan
    return None


def _context(spec: ModelSpec, hw: Hardware, request: PlanRequest) -> Optional[tuple[str, Plan]]:
    given = request.max_model_len
    if given is None:
        return None
    lo, hi = min_model_len(spec), given - 1  # the longest context below the given one that fits
    best: Optional[tuple[int, Plan]] = None
    while lo <= hi:
        mid = (lo + hi) // 2
        plan = _fitting(spec, hw, request.model_copy(update={"max_model_len": mid}))
        if plan is None:
            hi = mid - 1
        else:
            best, lo = (mid, plan), mid + 1
    return (f"--max-model-len {best[0]}", best[1]) if best else None


def _four_bit(spec: ModelSpec, hw: Hardware, request: PlanRequest) -> Optional[tuple[str, Plan]]:
    if request.load_in_4bit:
        return None
    plan = _fitting(spec, hw, request.model_copy(update={"load_in_4bit": True, "load_in_8bit": False}))
    return ("--load-in-4bit", plan) if plan is not None else None


def _identity(spec: ModelSpec, hw: Hardware, request: PlanRequest) -> Optional[tuple[str, Plan]]:
    plan = _fitting(spec, hw, request)
    return ("", plan) if plan is not None else None


RELAXATIONS: tuple[Callable[[ModelSpec, Hardware, PlanRequest], Optional[tuple[str, Plan]]], ...] = (
    _share, _context, _four_bit,
)


def _budgets(hw: Hardware) -> list[tuple[str, Hardware]]:
    """The budget as it is, then — only when the user capped it with MINERU_VIRTUAL_VRAM_SIZE — larger
    caps in half-GiB steps up to what the card has free."""
    out = [("", hw)]
    if hw.budget_reason.startswith("MINERU_VIRTUAL_VRAM_SIZE"):
        step = GIB // 2
        budget = (hw.budget_bytes // step + 1) * step
        while budget <= hw.free_bytes:
            out.append((f"MINERU_VIRTUAL_VRAM_SIZE={budget / GIB:g}", replace(hw, budget_bytes=budget)))
            budget += step
    return out


def nearest_fit(spec: ModelSpec, hw: Hardware, request: PlanRequest, report: PlanReport) -> str:
    """One line (well under 200 characters): why nothing fits, and the one change that makes it fit."""
    lightest = [p for p in report.levels if p.level != "flash"][-1]
    budget = f"{gib(hw.budget_bytes)}"
    for raised, capped in _budgets(hw):
        for relax in (RELAXATIONS if not raised else (_identity, *RELAXATIONS)):
            found = relax(spec, capped, request)
            if found is not None:
                change = " with ".join(part for part in (raised, found[0]) if part)
                plan = found[1]
                return (f"no {request.engine} level fits {budget} with these settings — nearest that works: "
                        f"{change} (level {plan.level}, {gib(plan.predicted_peak_bytes)})")
    return (f"no {request.engine} level fits {budget}: the lightest needs {gib(lightest.predicted_peak_bytes)} — "
            "free GPU memory, or parse without a model: mineru-fit parse --tier flash")
