"""Monotone by construction, checked by hypothesis over cards, engines and flags."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mineru_fit.models import default_spec
from mineru_fit.planner import Hardware, PlanRequest, make_report, plan_levels

SPEC = default_spec()
LEVELS = ["none", "basic", "aggressive", "extreme", "flash"]

requests = st.builds(
    PlanRequest,
    engine=st.sampled_from(["builtin", "sglang", "vllm"]),
    concurrency=st.one_of(st.none(), st.integers(1, 64)),
    max_model_len=st.one_of(st.none(), st.integers(1700, 32768)),
    load_in_4bit=st.booleans(),
    mem_fraction_static=st.one_of(st.none(), st.floats(0.05, 1.0)),
)
vram = st.floats(1.0, 160.0)


@settings(max_examples=300, deadline=None)
@given(request=requests, vram_gib=vram)
def test_a_more_aggressive_level_never_predicts_more_memory(request, vram_gib):
    plans = plan_levels(SPEC, Hardware.from_vram(vram_gib), request)
    peaks = [p.predicted_peak_bytes for p in plans]
    assert [p.level for p in plans] == LEVELS
    assert peaks == sorted(peaks, reverse=True), dict(zip(LEVELS, peaks))


@settings(max_examples=300, deadline=None)
@given(request=requests, small=vram, extra=st.floats(0.01, 80.0))
def test_more_vram_never_makes_auto_more_aggressive(request, small, extra):
    low = make_report(SPEC, Hardware.from_vram(small), request).chosen_level
    high = make_report(SPEC, Hardware.from_vram(small + extra), request).chosen_level
    assert LEVELS.index(high) <= LEVELS.index(low), (small, small + extra, low, high)


@settings(max_examples=100, deadline=None)
@given(request=requests, vram_gib=vram)
def test_auto_never_picks_a_plan_above_the_budget(request, vram_gib):
    hw = Hardware.from_vram(vram_gib)
    report = make_report(SPEC, hw, request)
    assert report.plan.fits
    assert report.plan.predicted_peak_bytes <= hw.budget_bytes
