"""When no model level holds what was asked: one short line naming the nearest value that works.

The user's own settings are relaxed one at a time, least surprising first — a larger memory
share, then a shorter context, then 4-bit weights — and the first value with which some level
fits is named. When MINERU_VIRTUAL_VRAM_SIZE caps the budget and no single flag helps, the
smallest cap that holds the lightest fitting level is named with it. Only what the user set is
moved, so the answer reads as "your command, with this changed".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Optional

from mineru_fit.models.spec import ModelSpec
from mineru_fit.planner import constants as C
from mineru_fit.planner.core import make_report, plan_levels
from mineru_fit.planner.inputs import Hardware, PlanRequest
from mineru_fit.planner.plan import Plan, PlanReport
from mineru_fit.planner.workload import min_model_len
from mineru_fit.units import GIB, gib

Fits = Callable[[PlanRequest], Optional[Plan]]  # a request -> the plan that holds it, or None
# MINERU_VIRTUAL_VRAM_SIZE is named in half GiB.
VIRTUAL_STEP_BYTES = GIB // 2


@dataclass(frozen=True)
class Change:
    text: str              # what to write, e.g. "--mem-fraction-static 0.11" ("" for no flag change)
    request: PlanRequest   # the request with it
    plan: Plan             # the plan that then holds


def _auto(spec: ModelSpec, hw: Hardware) -> Fits:
    """The plan `auto` would pick, or None when only flash fits."""
    def fits(request: PlanRequest) -> Optional[Plan]:
        plan = make_report(spec, hw, request.model_copy(update={"level": "auto"})).plan
        return None if plan.level == "flash" else plan
    return fits


def _smallest(spec: ModelSpec, hw: Hardware) -> Fits:
    """Of the levels that fit, the one with the smallest predicted peak."""
    def fits(request: PlanRequest) -> Optional[Plan]:
        plans = [p for p in plan_levels(spec, hw, request) if p.fits and p.level != "flash"]
        return min(plans, key=lambda p: p.predicted_peak_bytes) if plans else None
    return fits


def _unchanged(spec: ModelSpec, request: PlanRequest, fits: Fits) -> Optional[Change]:
    plan = fits(request)
    return Change("", request, plan) if plan is not None else None


def _share(spec: ModelSpec, request: PlanRequest, fits: Fits) -> Optional[Change]:
    given = request.memory_fraction
    if given is None:
        return None
    own = request.mem_fraction_static is not None
    name, key = ("--mem-fraction-static", "mem_fraction_static") if own else \
        ("--gpu-memory-utilization", "gpu_memory_utilization")
    # Linear, not bisected: a larger share can also make a level's KV pool outgrow the budget.
    for step in range(round(given / C.FRACTION_STEP) + 1, round(1 / C.FRACTION_STEP) + 1):
        share = round(step * C.FRACTION_STEP, 2)
        changed = request.model_copy(update={key: share})
        plan = fits(changed)
        if plan is not None:
            return Change(f"{name} {share:g}", changed, plan)
    return None


def _context(spec: ModelSpec, request: PlanRequest, fits: Fits) -> Optional[Change]:
    if request.max_model_len is None:
        return None
    lo, hi = min_model_len(spec), request.max_model_len - 1  # the longest shorter context that fits
    best: Optional[Change] = None
    while lo <= hi:
        mid = (lo + hi) // 2
        changed = request.model_copy(update={"max_model_len": mid})
        plan = fits(changed)
        if plan is None:
            hi = mid - 1
        else:
            best, lo = Change(f"--max-model-len {mid}", changed, plan), mid + 1
    return best


def _four_bit(spec: ModelSpec, request: PlanRequest, fits: Fits) -> Optional[Change]:
    if request.load_in_4bit:
        return None
    changed = request.model_copy(update={"load_in_4bit": True, "load_in_8bit": False})
    plan = fits(changed)
    return Change("--load-in-4bit", changed, plan) if plan is not None else None


RELAXATIONS = (_share, _context, _four_bit)


def _say(request: PlanRequest, hw: Hardware, change: str, plan: Plan) -> str:
    return (f"no {request.engine} level fits {gib(hw.budget_bytes)} with these settings — nearest that works: "
            f"{change} (level {plan.level}, {gib(plan.predicted_peak_bytes)})")


def nearest_fit(spec: ModelSpec, hw: Hardware, request: PlanRequest, report: PlanReport) -> str:
    """One line (well under 200 characters): why nothing fits, and the change that makes it fit."""
    for relax in RELAXATIONS:
        found = relax(spec, request, _auto(spec, hw))
        if found is not None:
            return _say(request, hw, found.text, found.plan)
    if hw.budget_reason.startswith("MINERU_VIRTUAL_VRAM_SIZE"):
        roomy = _smallest(spec, replace(hw, budget_bytes=hw.free_bytes))
        for relax in (_unchanged, *RELAXATIONS):
            found = relax(spec, request, roomy)
            if found is None:
                continue
            needed = found.plan.predicted_peak_bytes / (1 - C.FIT_HEADROOM_FRACTION)
            budget = math.ceil(needed / VIRTUAL_STEP_BYTES) * VIRTUAL_STEP_BYTES
            plan = _auto(spec, replace(hw, budget_bytes=budget))(found.request)
            if plan is not None and budget <= hw.free_bytes:
                change = " with ".join(x for x in (f"MINERU_VIRTUAL_VRAM_SIZE={budget / GIB:g}", found.text) if x)
                return _say(request, hw, change, plan)
    lightest = [p for p in report.levels if p.level != "flash"][-1]
    return (f"no {request.engine} level fits {gib(hw.budget_bytes)}: the lightest needs "
            f"{gib(lightest.predicted_peak_bytes)} — free GPU memory, or parse without a model: "
            "mineru-fit parse --tier flash")
