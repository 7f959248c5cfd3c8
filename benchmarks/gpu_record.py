"""The end of `make gpu`: one record from every step, the files it updates, their check, the table.

A dry run writes the same files into a copy of their folders (<out>/tree/), never into the
checkout, with the GPU named "CPU dry run (no GPU)" and the workers' resident memory standing in
for NVML's peaks, so the README table, chart and calibration code run exactly as on a GPU.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from gpu_checks import (
    engine_checks, memory_checks, monitor_check, monitor_figures, oom_checks, plan_cap_checks, throughput_checks,
    verdict,
)
from gpu_memory import ROOT, calibrate, gpu_class, gpu_facts, summarize, write_calibration

# `run` below is gpu_run.Run: its args, data, steps, work/root/out folders and clock.
Run = Any
CALIBRATION_PATH = Path("src/mineru_fit/planner/data/calibration.json")
MEASUREMENTS_PATH = Path("docs/measurements")
DRY_LABEL = "CPU dry run (no GPU)"
DRY_NOTE = ("every step at tiny size on the CPU: the 'measured' peaks are the workers' resident memory, not GPU "
            "memory, and nothing ran under an allocator cap — a rehearsal of the pipeline, not a measurement")
CHART_NAME = "memory-by-level.png"


def _portable(record: dict[str, Any], run: Run) -> dict[str, Any]:
    """No paths of this machine in a file that gets committed."""
    text = json.dumps(record)
    for path, name in ((str(run.work), "$WORK"), (str(run.out.resolve()), "$OUT"), (str(run.out), "$OUT"),
                       (str(ROOT), "."), (sys.executable, "python")):
        text = text.replace(json.dumps(path)[1:-1], name)
    return json.loads(text)


def build_record(run: Run) -> dict[str, Any]:
    table_path: Optional[Path] = run.data.get("table_path")
    if table_path is not None:
        record = json.loads(table_path.read_text())
    else:
        try:
            machine = gpu_facts(run.device)
        except Exception as exc:  # the preflight failed: what is known is that it failed
            machine = {"gpu": None, "reason": f"{type(exc).__name__}: {exc}"}
        record = {"machine": machine, "levels": [], "summary": [], "calibration": calibrate([])}
    record["memory_table_command"] = record.pop("command", None)
    record.update(benchmark="make_gpu", command=run.data["command"],
                  date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    record["preflight"] = run.data.get("preflight")
    serve = run.data.get("serve") or {}
    record["serve"] = serve or None
    record["engine_vs_mineru"] = run.data.get("engine_vs_mineru")
    watched = next((level for level in record["levels"] if level.get("monitor")), None)
    record["monitor"] = monitor_figures(watched) if watched else None
    if run.dry:
        record["machine"]["gpu"] = DRY_LABEL
        record["dry_run"] = DRY_NOTE
        record["summary"] = summarize(record["levels"], allow_rss=True)
    checks = memory_checks(record["summary"], "dry run: no GPU memory to compare" if run.dry else None)
    checks += plan_cap_checks(record["levels"], "dry run: the CPU has no allocator cap" if run.dry else None)
    checks.append(monitor_check(record["monitor"]) if record["monitor"] else
                  {"check": "monitor peak within 2% of NVML's per-process figure", "status": "n/a",
                   "detail": "the watched level did not run"})
    checks += throughput_checks(serve.get("throughput") or [])
    checks += oom_checks(serve.get("oom"), cap_applies=not run.dry)
    checks += engine_checks(record["engine_vs_mineru"],
                            "dry run: a tiny model on the CPU is no speed measurement" if run.dry else None)
    record.update(checks=checks, verdict=verdict(checks), steps=run.steps, budget_s=run.args.budget_s,
                  wall_s_before_finalize=round(run.elapsed(), 1))
    return _portable(record, run)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_outputs(run: Run, record: dict[str, Any]) -> dict[str, Path]:
    """The record, calibration.json, the README table and the chart, under run.root."""
    from memory_table import latest_measurements, render_chart, render_section, update_readme

    root = run.root
    measurements = root / MEASUREMENTS_PATH
    if run.dry:  # a copy of the folders the real run writes into
        shutil.rmtree(root, ignore_errors=True)
        measurements.mkdir(parents=True)
        (root / CALIBRATION_PATH).parent.mkdir(parents=True)
        shutil.copyfile(ROOT / "README.md", root / "README.md")
        shutil.copyfile(ROOT / CALIBRATION_PATH, root / CALIBRATION_PATH)
    gpu = record["machine"].get("gpu") or run.device
    # A second try that left steps out must not overwrite the first try's record of the same day.
    partial = "".join(f"-without-{step.replace('_', '-')}" for step in run.args.skip_steps)
    path = measurements / f"{_slug(gpu)}-{record['date'][:10]}{partial}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    files = {"record": path}
    context = record["calibration"].get("cuda_context_bytes")
    if run.dry and record["levels"]:  # the CPU has no CUDA context: the worker's memory before loading stands in
        context = (record["levels"][0].get("measured") or {}).get("rss_before_load_bytes")
    if record["machine"].get("gpu") and context:
        write_calibration(record["machine"]["gpu"], context, path, root / CALIBRATION_PATH, root)
        files["calibration"] = root / CALIBRATION_PATH
    latest = latest_measurements(measurements)
    update_readme(root / "README.md", render_section(latest))
    files["readme"] = root / "README.md"
    chart = render_chart(latest, measurements / CHART_NAME)
    if chart is not None:
        files["chart"] = chart
    return files


def verify_files(files: dict[str, Path], record: dict[str, Any], skipped: list[str] = ()) -> list[str]:
    """Each file as a reader will find it; one line per problem."""
    from memory_table import END, START

    problems = []
    gpu = record["machine"].get("gpu")
    saved = json.loads(files["record"].read_text())
    keys = ["machine", "command", "checks", "verdict", "steps"]
    keys += [] if "serve" in skipped else ["serve"]
    keys += [] if "engine_vs_mineru" in skipped else ["engine_vs_mineru"]
    keys += [] if "memory_table" in skipped else ["levels", "summary", "monitor"]
    for key in keys:
        if not saved.get(key):
            problems.append(f"{files['record'].name}: no {key}")
    if not gpu:
        return problems + ["no GPU named: the README table and calibration were not written"]
    if "memory_table" in skipped:
        return problems  # no level measured: no table, chart or calibration to check
    if "calibration" not in files:
        problems.append("calibration.json not written (no CUDA context measured)")
    else:
        entries = json.loads(files["calibration"].read_text())["gpu_classes"]
        if not any(e["gpu_class"] == gpu_class(gpu) and e["source"].endswith(files["record"].name) for e in entries):
            problems.append(f"calibration.json has no {gpu_class(gpu)} entry naming {files['record'].name}")
    section = files["readme"].read_text().split(START, 1)[-1].split(END, 1)[0]
    if gpu not in section or files["record"].name not in section:
        problems.append(f"README table does not show {gpu} from {files['record'].name}")
    for row in record["summary"]:
        if row.get("measured_bytes") and f"| {row['level']} |" not in section:
            problems.append(f"README table has no {row['level']} row")
    chart = files.get("chart")
    if chart is None or chart.read_bytes()[:4] != b"\x89PNG":
        problems.append(f"{CHART_NAME} missing or not a PNG")
    return problems


def _gib(value: Optional[float]) -> str:
    return f"{value / 2**30:.2f}" if value else "—"


def print_summary(run: Run) -> None:
    """The short table, printed last (the device tool returns the end of the output)."""
    record = run.data.get("record") or {}
    machine = record.get("machine") or {}
    broken = [s["step"] for s in run.steps if s["status"] == "error"]
    outcome = f"ERROR in {', '.join(broken)}" if broken else record.get("verdict", "no record")
    print(f"\n== make gpu on {machine.get('gpu') or 'no GPU'} (driver {machine.get('driver')}, CUDA "
          f"{machine.get('torch_cuda')}, torch {machine.get('torch')}): {outcome} "
          f"in {run.elapsed():.0f} s of {run.args.budget_s:.0f} s ==")
    levels = {r["level"]: r for r in record.get("levels", [])}
    print(f"{'level':<11}{'pred GiB':>9}{'meas GiB':>9}{'error':>8}{'pages/s':>9}{'tok/s':>8}")
    for row in record.get("summary", []):
        m = (levels.get(row["level"]) or {}).get("measured") or {}
        err = f"{row['error_pct']:+.1f}%" if row.get("error_pct") is not None else "—"
        print(f"{row['level']:<11}{_gib(row.get('predicted_bytes')):>9}{_gib(row.get('measured_bytes')):>9}{err:>8}"
              f"{m.get('pages_per_s') or '—':>9}{m.get('tokens_per_s') or '—':>8}" + (f"  {row['error']}" if row.get("error") else ""))
    mon = record.get("monitor")
    if mon:
        print(f"monitor ({mon['level']}): watch {_gib(mon['monitor_watch_peak_bytes'])} GiB @ {mon['monitor_watch_rate_hz']} Hz, "
              f"once {_gib(mon['monitor_once_process_bytes'])}, NVML in-process {_gib(mon['nvml_in_process_peak_bytes'])} "
              f"@ {mon['nvml_in_process_rate_hz']} Hz, accounting {_gib(mon['nvml_accounting_max_bytes'])}, "
              f"torch reserved+context {_gib(mon['torch_reserved_plus_context_bytes'])}")
    serve = record.get("serve") or {}
    rows = serve.get("throughput") or []
    if rows:
        print(f"throughput (level {serve.get('level')}): " + " | ".join(
            f"c={r['concurrency']} skipped" if "skipped" in r else
            f"c={r['concurrency']} {r['requests_per_s']} req/s {r['tokens_per_s']} tok/s" for r in rows))
    oom = serve.get("oom") or {}
    if oom.get("burst"):
        cap = (oom.get("cap") or {}).get("cap_bytes")
        print(f"oom burst (cap {_gib(cap)} GiB): {oom['burst']['statuses']}; events {oom['oom_events']}; "
              f"recovery {oom['recovery']['statuses']}; healthy {oom.get('healthy_after')}")
    engine = (record.get("engine_vs_mineru") or {}).get("summary")
    if engine:
        print(f"engine vs MinerU transformers ({record['engine_vs_mineru'].get('dtype')}, tokens/s): " + " | ".join(
            f"c={c} {row['builtin_tokens_per_s']} vs {row['mineru_tokens_per_s']} = {row['ratio']}×"
            for c, row in engine["by_concurrency"].items() if row["ratio"] is not None))
    checks = record.get("checks") or []
    counts = {s: sum(c["status"] == s for c in checks) for s in ("pass", "fail", "n/a")}
    print(f"checks: {counts['pass']} pass, {counts['fail']} fail, {counts['n/a']} n/a")
    for c in checks:
        if c["status"] == "fail":
            print(f"  FAIL {c['check']}: {c['detail']}")
    print("steps: " + ", ".join(f"{s['step']} {s['status']}" + (f" {s['took_s']:.0f}/{s['estimate_s']:.0f} s" if "took_s" in s else "")
                                for s in run.steps))
    for problem in run.data.get("file_problems") or []:
        print(f"  FILE {problem}")
    print(f"files in {run.out}: " + ", ".join(sorted(p.name for p in run.out.iterdir() if p.is_file())))
