"""`mineru-fit monitor`: GPUs, processes and engines joined, with advice; `monitor watch -- CMD` for peaks.

`--once --json` prints one object of schema "mineru-fit/monitor" version 1 (docs/monitor.md);
`monitor watch` writes one of schema "mineru-fit/watch" version 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from mineru_fit.cli.app import app
from mineru_fit.errors import MineruFitError, UsageError
from mineru_fit.settings import load_settings
from mineru_fit.units import gib

monitor_app = typer.Typer(
    name="monitor",
    help="Live GPU and engine memory, temperature and load, with advice; `monitor watch -- CMD` for a command's peaks.",
    add_completion=False,
)
app.add_typer(monitor_app, name="monitor")


@monitor_app.callback(invoke_without_command=True)
def monitor(
    ctx: typer.Context,
    interval: float = typer.Option(1.0, "--interval", metavar="S", help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once", help="Take one snapshot, print it and exit."),
    as_json: bool = typer.Option(False, "--json", help="JSON: one object with --once, else one line per refresh."),
    count: Optional[int] = typer.Option(None, "--count", min=1, metavar="N", help="Stop after N refreshes."),
    log: Optional[Path] = typer.Option(None, "--log", metavar="FILE", help="Append every snapshot to FILE (JSON lines)."),
    prometheus: Optional[int] = typer.Option(
        None, "--prometheus", min=0, max=65535, metavar="PORT", help="Serve the snapshot as Prometheus gauges on PORT."
    ),
    simulate: Optional[Path] = typer.Option(
        None, "--simulate", metavar="FILE", help="Replay a devices snapshot (devices --record) instead of NVML."
    ),
    engine_url: Optional[list[str]] = typer.Option(
        None, "--engine-url", metavar="URL", help="An engine to watch besides those in run records (repeatable)."
    ),
    gpu: Optional[int] = typer.Option(None, "--gpu", min=0, metavar="N", help="Only CUDA GPU N."),
    plan_file: Optional[Path] = typer.Option(
        None, "--plan", metavar="FILE", help="The plan you run (plan --json output) for sharper advice."
    ),
) -> None:
    """Watch GPU memory, processes, engines' KV and queues; say what to change, with numbers."""
    if ctx.invoked_subcommand is not None:
        return
    from mineru_fit.monitor import AdvisorContext, MonitorOptions, Sampler, run_monitor

    settings = load_settings()
    options = MonitorOptions(
        interval_s=interval, once=once, as_json=as_json, count=count, log_path=log,
        prometheus_port=prometheus, prometheus_host=settings.host,
    )
    context = AdvisorContext(
        plan=_read_plan(plan_file) if plan_file is not None else None,
        spec=_spec(settings),
        virtual_vram_bytes=settings.virtual_vram_bytes,
        user_alloc_conf=settings.pytorch_cuda_alloc_conf,
    )
    device_mode = f"cuda:{gpu}" if gpu is not None else settings.device_mode
    with Sampler(device_mode=device_mode, simulate=simulate, engine_urls=engine_url or ()) as sampler:
        code = run_monitor(sampler, context, options, Console())
    raise typer.Exit(code)


@monitor_app.command(
    "watch",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
def watch(
    command: Optional[list[str]] = typer.Argument(None, metavar="-- CMD ...", help="The command to run and watch."),
    interval_ms: float = typer.Option(50.0, "--interval-ms", help="Milliseconds between samples (50 = 20 Hz)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="Write the JSON here (else to stdout)."),
    health_url: Optional[str] = typer.Option(
        None, "--health-url", metavar="URL", help="Load ends when this answers 200 (default: from the command's --port)."
    ),
    metrics_url: Optional[str] = typer.Option(
        None, "--metrics-url", metavar="URL", help="First request ends when its request counter rises (default: from --port)."
    ),
    ready_pattern: Optional[str] = typer.Option(
        None, "--ready-pattern", metavar="REGEX", help="Load ends at the first output line matching this."
    ),
    phase_marker: Optional[str] = typer.Option(
        None, "--phase-marker", metavar="REGEX", help="First request ends at the first output line matching this."
    ),
    simulate: Optional[Path] = typer.Option(None, "--simulate", metavar="FILE", help="Sample a devices snapshot instead of NVML."),
) -> None:
    """Run CMD, sample its GPU memory at 20 Hz and write its peak per phase: load, first_request, steady."""
    from mineru_fit.monitor.watch import DEFAULT_READY_PATTERN
    from mineru_fit.monitor.watch_run import WatchOptions, run_watch

    options = WatchOptions(
        command=command or [], interval_ms=interval_ms, out=out, health_url=health_url, metrics_url=metrics_url,
        ready_pattern=ready_pattern if ready_pattern is not None else DEFAULT_READY_PATTERN,
        phase_marker=phase_marker, simulate=simulate,
    )
    code, result = run_watch(options)
    err = Console(stderr=True)
    err.print(_watch_summary(result, out), highlight=False, soft_wrap=True)
    if out is None:
        typer.echo(json.dumps(result, indent=2))
    raise typer.Exit(code)


def _watch_summary(result: dict, out: Optional[Path]) -> str:
    where = f" — written to {out}" if out is not None else ""
    if result["reason"]:
        return f"monitor watch: exit {result['exit_code']}; no GPU samples ({result['reason']}){where}"
    phases = ", ".join(
        f"{name} {gib(p['peak_bytes'])}" for name, p in result["phases"].items() if p and p["peak_bytes"] is not None
    )
    peak = gib(result["peak_bytes"]) if result["peak_bytes"] is not None else "n/a"
    return (f"monitor watch: exit {result['exit_code']}; peak {peak} in {result['peak_phase']} ({phases}); "
            f"{result['samples']} samples at {result['sample_rate_hz']} Hz, {result['memory_source']}{where}")


def _read_plan(path: Path):
    from mineru_fit.planner import Plan

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"--plan {path}: no such file — write one with `mineru-fit plan --json > FILE`") from exc
    except (OSError, ValueError) as exc:
        raise UsageError(f"--plan {path}: not readable JSON ({exc}) — write one with `mineru-fit plan --json > FILE`") from exc
    body = raw.get("plan", raw) if isinstance(raw, dict) else raw  # a PlanReport holds the chosen plan
    try:
        return Plan.model_validate(body)
    except ValidationError as exc:
        raise UsageError(f"--plan {path}: not a plan ({exc.errors()[0].get('msg', 'invalid')}) — use `mineru-fit plan --json` output") from exc


def _spec(settings):
    from mineru_fit.models import default_spec, load_spec

    try:
        return load_spec(settings.model, models_dir=settings.models_dir)
    except MineruFitError:
        return default_spec()  # advice in bytes per token still holds for the shipped MinerU2.5 spec
