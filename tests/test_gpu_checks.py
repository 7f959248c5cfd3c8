"""The pass/fail lines `make gpu` prints, and how it sizes the OOM step's cap: pure, no GPU needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_checks import (  # noqa: E402
    engine_checks, memory_checks, monitor_check, oom_checks, plan_cap_checks, throughput_checks, verdict,
)

GIB = 2**30


def _row(level: str, predicted: float, measured: float, floor: float = 0) -> dict:
    row = {"level": level, "predicted_bytes": int(predicted * GIB), "measured_bytes": int(measured * GIB),
           "error_pct": round(100 * (predicted - measured) / measured, 2), "error": None}
    if floor:
        row.update(floor_bytes=int(floor * GIB), peak_over_floor=round(measured / floor, 3))
    return row


def _status(checks: list[dict]) -> dict[str, str]:
    return {c["check"]: c["status"] for c in checks}


def test_planner_error_and_under_prediction_are_judged_per_level() -> None:
    status = _status(memory_checks([_row("none", 10.4, 10.0), _row("basic", 9.4, 10.0), _row("aggressive", 9.65, 10.0),
                                    _row("extreme", 2.0, 1.9, floor=1.7)]))
    assert status["none: planner error within 5%"] == "pass"          # +4% over: fine
    assert status["basic: planner error within 5%"] == "fail"         # 6% under
    assert status["basic: under-prediction at most 3%"] == "fail"
    assert status["aggressive: planner error within 5%"] == "pass"    # 3.5% under: within 5% ...
    assert status["aggressive: under-prediction at most 3%"] == "fail"  # ... but under by more than 3%
    assert status["extreme: peak at most 1.15× its floor"] == "pass"  # 1.9 / 1.7 = 1.12


def test_floor_over_the_limit_fails_and_nothing_measured_is_not_a_pass() -> None:
    status = _status(memory_checks([_row("extreme", 2.0, 2.0, floor=1.6)]))
    assert status["extreme: peak at most 1.15× its floor"] == "fail"  # 1.25×
    unmeasured = {"level": "none", "predicted_bytes": GIB, "measured_bytes": None, "error_pct": None,
                  "error": "worker exited 1: CUDA error"}
    checks = memory_checks([unmeasured])
    assert {c["status"] for c in checks} == {"n/a"} and "CUDA error" in checks[0]["detail"]
    assert verdict(checks) == "pass" and verdict(memory_checks([_row("basic", 5, 10)])) == "fail"


def _figures(watch: float, in_process: float, accounting: float = 0) -> dict:
    return {"level": "extreme", "monitor_watch_peak_bytes": int(watch * GIB), "nvml_in_process_peak_bytes":
            int(in_process * GIB), "nvml_in_process_source": "nvml-process",
            "nvml_accounting_max_bytes": int(accounting * GIB) or None, "reason": None}


def test_monitor_peak_is_held_to_nvml_within_two_percent() -> None:
    assert monitor_check(_figures(3.05, 3.0))["status"] == "pass"     # +1.7%
    assert monitor_check(_figures(3.1, 3.0))["status"] == "fail"      # +3.3%
    # The driver's own maximum, where accounting is on, is the figure to meet.
    check = monitor_check(_figures(3.05, 3.05, accounting=3.2))
    assert check["status"] == "fail" and "accounting" in check["detail"]
    assert monitor_check({**_figures(0, 0), "reason": "no GPU to sample"})["status"] == "n/a"


def _oom(statuses: dict, recovery: dict, events: dict, answered: int = 16) -> dict:
    return {"burst": {"requests": 16, "answered": answered, "statuses": statuses},
            "recovery": {"requests": 8, "statuses": recovery}, "oom_events": events, "healthy_after": True}


def test_the_oom_burst_must_split_shrink_reject_and_lose_nothing() -> None:
    good = _oom({"200": 12, "503": 4}, {"200": 8}, {"split": 3, "shrink": 5, "rejected": 4})
    assert {c["status"] for c in oom_checks(good, cap_applies=True)} == {"pass"}
    dropped = _status(oom_checks(_oom({"200": 15, "None": 1}, {"200": 8}, {"split": 1, "shrink": 1, "rejected": 1},
                                      answered=15), cap_applies=True))
    assert dropped["oom: every request answered"] == "fail" and dropped["oom: only 200 or 503"] == "fail"
    no_shrink = _status(oom_checks(_oom({"200": 16}, {"200": 8}, {"split": 2, "shrink": 0, "rejected": 0}), True))
    assert no_shrink["oom: a request shrunk under the cap"] == "fail" and no_shrink["oom: a 503 under the cap"] == "fail"
    on_cpu = _status(oom_checks(_oom({"200": 16}, {"200": 8}, {"split": 0, "shrink": 0, "rejected": 0}), False))
    assert on_cpu["oom: a batch split under the cap"] == "n/a" and on_cpu["oom: every request answered"] == "pass"
    assert _status(oom_checks({"cap": {}, "error": "no /health within 30 s"}, True))["oom: burst answered"] == "fail"
    assert _status(oom_checks({"skipped": "time box reached"}, True))["oom: burst answered"] == "n/a"


def test_throughput_rows_must_all_be_answered() -> None:
    checks = throughput_checks([{"concurrency": 1, "requests": 8, "statuses": {"200": 8}, "requests_per_s": 1,
                                 "tokens_per_s": 64}, {"concurrency": 32, "requests": 64, "statuses": {"200": 60, "500": 4},
                                                       "requests_per_s": 9, "tokens_per_s": 600},
                                {"concurrency": 8, "skipped": "time box reached"}])
    assert [c["status"] for c in checks] == ["pass", "fail", "n/a"]


def test_the_oom_cap_leaves_room_for_weights_kv_and_a_share_of_one_request(tmp_path: Path) -> None:
    pytest.importorskip("pydantic")
    from gpu_serve import OOM_ACTIVATION_SHARE, measured_activation_bytes, oom_cap

    from mineru_fit.models import default_spec
    from mineru_fit.planner import PlanRequest, make_report
    from mineru_fit.planner.inputs import Hardware

    spec = default_spec()
    hw = Hardware.from_vram(140)
    plan = make_report(spec, hw, PlanRequest(engine="builtin", level="basic", concurrency=8)).plan
    cap = oom_cap(spec, plan, hw.total_bytes, None)
    kv_one = plan.max_model_len * 12 * 1024  # 12 KiB per token in bf16 (FACTS.md)
    assert cap["kv_one_request_bytes"] == kv_one and cap["activation_from"] == "planner"
    assert cap["cap_bytes"] == plan.terms["weights"] + kv_one + int(OOM_ACTIVATION_SHARE * cap["activation_one_request_bytes"])
    # Below what the plan itself needs for one batch, far above the weights alone.
    assert plan.terms["weights"] < cap["cap_bytes"] < plan.predicted_peak_bytes
    assert cap["fraction"] == pytest.approx(cap["cap_bytes"] / hw.total_bytes, abs=1e-6)
    record = {"levels": [{"level": "basic", "plan": {"batch_size": 8, "max_model_len": 8192, "dtype": "bfloat16"},
                          "measured": {"torch_max_reserved_bytes": 10 * GIB, "allocated_after_load_bytes": 2 * GIB}}]}
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    per_request = measured_activation_bytes(path, "basic", spec)
    assert per_request == (8 * GIB - 8 * 8192 * 12 * 1024) // 8
    assert oom_cap(spec, plan, hw.total_bytes, per_request)["activation_from"] == "measured"
    assert measured_activation_bytes(path, "extreme", spec) is None and measured_activation_bytes(None, "basic", spec) is None


def test_an_oom_under_the_plans_own_cap_fails_its_level() -> None:
    levels = [{"level": "basic", "measured": {"oom_events": {"split": 0.0, "shrink": 0.0, "rejected": 0.0}, "oom": None}},
              {"level": "extreme", "measured": {"oom_events": {"split": 2.0}, "oom": None}},
              {"level": "none", "error": "timed out after 100 s"}]
    assert [c["status"] for c in plan_cap_checks(levels)] == ["pass", "fail", "n/a"]
    assert {c["status"] for c in plan_cap_checks(levels, "dry run")} == {"n/a"}


def test_the_error_is_judged_with_the_measured_cuda_context_once_there_is_one() -> None:
    row = _row("basic", 9.4, 10.0)  # 6% under as planned with the estimated context ...
    row.update(predicted_calibrated_bytes=int(9.8 * GIB), error_calibrated_pct=-2.0)  # ... 2% with the measured one
    [error, under] = memory_checks([row])[:2]
    assert error["status"] == under["status"] == "pass"
    assert "-6.00%" in error["detail"] and "-2.00% (judged)" in error["detail"]


def test_summary_swaps_the_estimated_context_for_the_measured_one() -> None:
    from gpu_memory import summarize

    mib = 2**20
    result = {"level": "extreme", "predicted_peak_bytes": 3000 * mib, "plan": {"terms": {"runtime": 300 * mib}},
              "measured": {"nvml_peak_bytes": 3100 * mib}, "floor": {"total_bytes": 2800 * mib}}
    [row] = summarize([result], context_bytes=450 * mib)
    assert row["error_pct"] == pytest.approx(-3.23, abs=0.01) and row["under_predicted"] is True
    assert row["predicted_calibrated_bytes"] == 3150 * mib
    assert row["error_calibrated_pct"] == pytest.approx(1.61, abs=0.01)
    assert row["peak_over_floor"] == pytest.approx(1.107, abs=0.001)
    [plain] = summarize([result])  # no context measured (a CPU run): nothing calibrated is claimed
    assert "error_calibrated_pct" not in plain


def _engine(c8: float | None, by_level: dict[str, float | None]) -> dict:
    """engine_vs_mineru.py's summary, as much of it as the checks read."""
    row = {"ratio": c8, "builtin_tokens_per_s": None if c8 is None else 30.0 * c8, "mineru_tokens_per_s": 30.0}
    return {"dtype": "bfloat16", "workload": {"pages_per_round": 4},
            "summary": {"by_concurrency": {"8": row},
                        "concurrency_1_by_level": {lv: {"ratio_to_mineru_c1": r} for lv, r in by_level.items()}}}


def test_engine_speed_checks_pass_fail_and_never_count_a_left_out_level_as_met() -> None:
    c8 = "engine: concurrency 8 at least 1.5× MinerU's transformers backend"
    c1 = "engine: concurrency 1 at least 0.95× it at every level's context"
    every = {"none": 1.2, "basic": 1.1, "aggressive": 1.0, "extreme": 0.96}
    assert _status(engine_checks(_engine(1.62, every))) == {c8: "pass", c1: "pass"}
    assert _status(engine_checks(_engine(1.49, every)))[c8] == "fail"
    assert _status(engine_checks(_engine(1.6, {**every, "extreme": 0.94})))[c1] == "fail"
    # The time box left two levels out: what was measured passed, but the check is not met.
    partial = engine_checks(_engine(1.6, {**every, "aggressive": None, "extreme": None}))
    assert _status(partial)[c1] == "n/a" and "not measured: aggressive, extreme" in partial[1]["detail"]
    # ... yet one measured level under the limit fails it outright.
    assert _status(engine_checks(_engine(1.6, {"none": 0.9, "basic": None})))[c1] == "fail"
    assert _status(engine_checks(_engine(None, every)))[c8] == "n/a"
    assert _status(engine_checks(None)) == {c8: "n/a", c1: "n/a"}
    dry = engine_checks(_engine(0.4, every), "dry run: no speed")
    assert _status(dry) == {c8: "n/a", c1: "n/a"} and "0.4×" in dry[0]["detail"]
