"""What `make gpu` must show, computed from its record: pass, fail, or n/a (and why).

Pure functions of the record, so the thresholds are tested without a GPU:
- the planner's predicted peak within 5% of the measured one at every level;
- no level under-predicted by more than 3%;
- the extreme level's peak at most 1.15× its physical floor;
- the monitor's sampled peak within 2% of NVML's own per-process figure;
and what the OOM burst and the throughput runs must show (every request answered, and so on), and
the built-in engine's speed against MinerU's own transformers backend (issue 15).
"""

from __future__ import annotations

from typing import Any, Optional

ERROR_PCT = 5.0
UNDER_PCT = 3.0
FLOOR_RATIO = 1.15
MONITOR_PCT = 2.0
SPEED_C8 = 1.5   # issue 15: tokens/s at concurrency 8, against MinerU's transformers backend
SPEED_C1 = 0.95  # issue 15: at concurrency 1, at every level's context


def _check(name: str, ok: Optional[bool], detail: str) -> dict[str, Any]:
    return {"check": name, "status": "n/a" if ok is None else "pass" if ok else "fail", "detail": detail}


def _gib(value: Optional[float]) -> str:
    return f"{value / 2**30:.3f} GiB" if value else "—"


def memory_checks(summary: list[dict[str, Any]], na_reason: Optional[str] = None) -> list[dict[str, Any]]:
    """Error and under-prediction per level, and the floor; n/a with a reason where nothing was measured."""
    checks = []
    for row in summary:
        level = row["level"]
        # The planner as this run leaves it: with this GPU class's measured CUDA context in calibration.json.
        err = row.get("error_calibrated_pct", row.get("error_pct"))
        why = na_reason or row.get("error") or "no NVML peak measured"
        if na_reason is not None or err is None:
            checks.append(_check(f"{level}: planner error within {ERROR_PCT:g}%", None, why))
            checks.append(_check(f"{level}: under-prediction at most {UNDER_PCT:g}%", None, why))
            continue
        detail = f"predicted {_gib(row['predicted_bytes'])}, measured {_gib(row['measured_bytes'])}: {row['error_pct']:+.2f}%"
        if "error_calibrated_pct" in row:
            detail += (f"; with the measured CUDA context {_gib(row['predicted_calibrated_bytes'])}: "
                       f"{row['error_calibrated_pct']:+.2f}% (judged)")
        checks.append(_check(f"{level}: planner error within {ERROR_PCT:g}%", abs(err) <= ERROR_PCT, detail))
        checks.append(_check(f"{level}: under-prediction at most {UNDER_PCT:g}%", err >= -UNDER_PCT, detail))
    floor = next((r for r in summary if r["level"] == "extreme"), None)
    if floor is None or na_reason is not None or "peak_over_floor" not in floor:
        checks.append(_check(f"extreme: peak at most {FLOOR_RATIO:g}× its floor", None,
                             na_reason or "extreme not measured"))
    else:
        ratio = floor["peak_over_floor"]
        checks.append(_check(f"extreme: peak at most {FLOOR_RATIO:g}× its floor", ratio <= FLOOR_RATIO,
                             f"peak {_gib(floor['measured_bytes'])} = {ratio:.3f}× floor {_gib(floor['floor_bytes'])}"))
    return checks


def plan_cap_checks(levels: list[dict[str, Any]], na_reason: Optional[str] = None) -> list[dict[str, Any]]:
    """Each level runs under its plan's allocator cap: an out-of-memory event there means the plan
    under-predicted, and the measured peak is then held down by the cap — an error check would pass
    on a censored number, so this one fails instead."""
    checks = []
    for level in levels:
        name = f"{level['level']}: no out-of-memory under its plan's own cap"
        m = level.get("measured")
        if na_reason is not None or m is None:
            checks.append(_check(name, None, na_reason or level.get("error") or "not measured"))
            continue
        hit = {action: n for action, n in (m.get("oom_events") or {}).items() if n}
        checks.append(_check(name, not hit and not m.get("oom"),
                             f"out-of-memory events {hit}: {m.get('oom')}" if hit or m.get("oom") else "none"))
    return checks


def monitor_figures(level: dict[str, Any]) -> dict[str, Any]:
    """The watched level's peak as the monitor saw it, beside torch's and NVML's own."""
    m, mon = level.get("measured") or {}, level.get("monitor") or {}
    watch, once = mon.get("watch") or {}, mon.get("once") or {}
    reserved, context = m.get("torch_max_reserved_bytes"), m.get("cuda_context_bytes")
    return {
        "level": level.get("level"),
        "monitor_watch_peak_bytes": watch.get("peak_bytes"),
        "monitor_watch_source": watch.get("memory_source"),
        "monitor_watch_rate_hz": watch.get("sample_rate_hz"),
        "monitor_once_process_bytes": once.get("process_used_bytes"),
        "nvml_in_process_peak_bytes": m.get("nvml_peak_bytes"),
        "nvml_in_process_source": m.get("nvml_source"),
        "nvml_in_process_rate_hz": m.get("nvml_sample_rate_hz"),
        "nvml_accounting_max_bytes": m.get("nvml_accounting_max_bytes"),
        "torch_max_reserved_bytes": reserved,
        "torch_reserved_plus_context_bytes": reserved + context if reserved and context else None,
        "reason": watch.get("reason") or m.get("nvml_reason"),
    }


def monitor_check(figures: dict[str, Any]) -> dict[str, Any]:
    """The monitor's peak against NVML's own per-process figure: the driver's accounting maximum
    where accounting is on, else NVML's per-process reading sampled inside the worker."""
    name = f"monitor peak within {MONITOR_PCT:g}% of NVML's per-process figure"
    ours = figures["monitor_watch_peak_bytes"]
    theirs = figures["nvml_accounting_max_bytes"] or figures["nvml_in_process_peak_bytes"]
    if not ours or not theirs:
        return _check(name, None, figures.get("reason") or "no GPU samples")
    which = "accounting max" if figures["nvml_accounting_max_bytes"] else f"in-process {figures['nvml_in_process_source']}"
    diff = 100 * (ours - theirs) / theirs
    return _check(name, abs(diff) <= MONITOR_PCT, f"{figures['level']}: monitor {_gib(ours)} vs NVML ({which}) "
                                                   f"{_gib(theirs)}: {diff:+.2f}%")


def oom_checks(oom: Optional[dict[str, Any]], cap_applies: bool) -> list[dict[str, Any]]:
    """The OOM burst: everything answered with 200 or 503, split/shrink/503 each seen under a real
    cap, ordinary requests served afterwards, and the server still healthy."""
    if not oom or oom.get("skipped"):
        return [_check("oom: burst answered", None, (oom or {}).get("skipped") or "not run")]
    if oom.get("error"):  # the capped server did not come up
        return [_check("oom: burst answered", False, oom["error"])]
    burst, recovery = oom["burst"], oom["recovery"]
    statuses = set(burst["statuses"])
    checks = [
        _check("oom: every request answered", burst["answered"] == burst["requests"],
               f"{burst['answered']} of {burst['requests']} answered: {burst['statuses']}"),
        _check("oom: only 200 or 503", statuses <= {"200", "503"}, f"statuses {burst['statuses']}"),
        _check("oom: served normally afterwards", recovery["statuses"] == {"200": recovery["requests"]},
               f"statuses {recovery['statuses']}"),
        _check("oom: server healthy afterwards", bool(oom.get("healthy_after")), f"healthy {oom.get('healthy_after')}"),
    ]
    events = oom["oom_events"]
    for action, label in (("split", "a batch split"), ("shrink", "a request shrunk"), ("rejected", "a 503")):
        seen = events.get(action, 0) > 0
        ok: Optional[bool] = seen if cap_applies else (None if not seen else True)
        checks.append(_check(f"oom: {label} under the cap", ok,
                             f"{action} {events.get(action, 0):g}" + ("" if cap_applies else " (no cap on the CPU)")))
    return checks


def throughput_checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for row in rows:
        name = f"throughput: concurrency {row['concurrency']} all answered 200"
        if "skipped" in row:
            checks.append(_check(name, None, row["skipped"]))
        else:
            checks.append(_check(name, row["statuses"] == {"200": row["requests"]},
                                 f"{row['requests_per_s']} req/s, {row['tokens_per_s']} tok/s, {row['statuses']}"))
    return checks


def engine_checks(result: Optional[dict[str, Any]], na_reason: Optional[str] = None) -> list[dict[str, Any]]:
    """The engine's two speed must-holds from engine_vs_mineru.py's summary. A configuration the
    time box left out is never counted as met: a ratio under its limit fails, and the check passes
    only when everything it names was measured."""
    name8 = f"engine: concurrency 8 at least {SPEED_C8:g}× MinerU's transformers backend"
    name1 = f"engine: concurrency 1 at least {SPEED_C1:g}× it at every level's context"
    if not result or "summary" not in result:
        return [_check(name8, None, "not run"), _check(name1, None, "not run")]
    summary = result["summary"]
    row = summary["by_concurrency"]["8"]
    pages = (result.get("workload") or {}).get("pages_per_round")
    if row["ratio"] is None:
        c8 = _check(name8, None, "not measured (left out by the time box)")
    else:
        c8 = _check(name8, None if na_reason else row["ratio"] >= SPEED_C8,
                    f"{row['ratio']}×: {row['builtin_tokens_per_s']} vs {row['mineru_tokens_per_s']} tokens/s, "
                    f"{pages} pages, {result.get('dtype')}" + (f" ({na_reason})" if na_reason else ""))
    ratios = {level: v["ratio_to_mineru_c1"] for level, v in summary["concurrency_1_by_level"].items()}
    measured = {level: r for level, r in ratios.items() if r is not None}
    detail = ", ".join(f"{level} {r}×" for level, r in measured.items()) or "nothing measured"
    missing = sorted(set(ratios) - set(measured))
    if missing:
        detail += f"; not measured: {', '.join(missing)}"
    ok: Optional[bool] = None
    if measured and not na_reason:
        ok = False if min(measured.values()) < SPEED_C1 else (True if not missing else None)
    return [c8, _check(name1, ok, detail + (f" ({na_reason})" if na_reason else ""))]


def verdict(checks: list[dict[str, Any]]) -> str:
    """'fail' when any check failed, else 'pass' (n/a counts for neither)."""
    return "fail" if any(c["status"] == "fail" for c in checks) else "pass"
