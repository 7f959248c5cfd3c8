"""What `mineru-fit serve` and `mineru-sglang-server` do once their flags are parsed."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import typer
from rich.console import Console

from mineru_fit.cli.hardware import resolve_hardware
from mineru_fit.cli.plan_cmd import pick_engine, request_from_flags
from mineru_fit.errors import EngineFlagError, UsageError
from mineru_fit.planner import Plan, PlanReport, make_report
from mineru_fit.planner.levels import MODEL_LEVELS
from mineru_fit.settings import Settings, load_settings
from mineru_fit.units import human

if TYPE_CHECKING:
    from mineru_fit.engines.supervisor import LevelRun

err_console = Console(stderr=True)


@dataclass(frozen=True)
class ServeArgs:
    """Every flag serve takes; None: not given."""

    engine: str = "auto"
    level: str = "auto"
    vram: Optional[float] = None
    gpu: Optional[int] = None
    simulate: Optional[Path] = None
    gpus: Optional[int] = None
    concurrency: Optional[int] = None
    max_model_len: Optional[int] = None
    mem_fraction_static: Optional[float] = None
    gpu_memory_utilization: Optional[float] = None
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    dtype: Optional[str] = None
    kv_cache_dtype: Optional[str] = None
    tp_size: Optional[int] = None
    dp_size: Optional[int] = None
    model: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None
    dry_run: bool = False
    health_timeout_s: float = 900.0
    max_attempts: int = 3
    # The built-in engine's own knobs (they appear in its planned command).
    max_batch_size: Optional[int] = None
    max_image_pixels: Optional[int] = None
    max_new_tokens: Optional[int] = None
    served_model_name: Optional[str] = None
    allow_remote_images: bool = False

    @property
    def builtin_overrides(self) -> dict[str, object]:
        """The built-in engine's own flags that were given (None and False are 'not given')."""
        values = {"max_batch_size": self.max_batch_size, "max_image_pixels": self.max_image_pixels,
                  "max_new_tokens": self.max_new_tokens, "served_model_name": self.served_model_name,
                  "allow_remote_images": self.allow_remote_images or None}
        return {k: v for k, v in values.items() if v is not None}



def plan_serve(args: ServeArgs, settings: Settings, *, allow_flash: bool = False) -> tuple[PlanReport, str]:
    """The plan for `args` on this machine and why that engine; UsageError when no model level fits
    (unless allow_flash: then the report says flash and the caller goes model-free)."""
    from mineru_fit.models import load_spec

    model_id = args.model or settings.model
    hw = resolve_hardware(settings, vram_gib=args.vram, gpu_index=args.gpu, simulate=args.simulate, gpus=args.gpus,
                          gpus_used=(args.tp_size or 1) * (args.dp_size or 1))
    engine, reason = pick_engine(args.engine, hw)
    request = request_from_flags(
        engine=engine, level=args.level, concurrency=args.concurrency, max_model_len=args.max_model_len,
        mem_fraction_static=args.mem_fraction_static, gpu_memory_utilization=args.gpu_memory_utilization,
        load_in_4bit=args.load_in_4bit, load_in_8bit=args.load_in_8bit, dtype=args.dtype,
        kv_cache_dtype=args.kv_cache_dtype, tp_size=args.tp_size, dp_size=args.dp_size, model=model_id,
        host=args.host or settings.host, port=args.port or settings.port,
    )
    spec = load_spec(model_id, models_dir=settings.models_dir)
    report = make_report(spec, hw, request, user_alloc_conf=settings.pytorch_cuda_alloc_conf)
    if report.plan.level == "flash" and not allow_flash:
        from mineru_fit.planner.nearest import nearest_fit

        raise UsageError(nearest_fit(spec, hw, request, report))
    return report, reason


def run_serve(args: ServeArgs, extra_args: Sequence[str] = ()) -> None:
    """Plan, then start the engine (or print its command with --dry-run)."""
    if args.max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    settings = load_settings()
    report, reason = plan_serve(args, settings)
    plan = report.plan
    if plan.engine == "builtin":
        _serve_builtin(args, settings, plan, report, reason, extra_args)
    else:
        if args.builtin_overrides:
            given = ", ".join("--" + k.replace("_", "-") for k in args.builtin_overrides)
            raise UsageError(f"{given}: the built-in engine's flags — for sglang/vllm use --concurrency and "
                             "--max-model-len (and the engine's own flags after --)")
        _serve_engine(args, settings, report, reason, extra_args)


def _header(report: PlanReport, reason: str) -> list[str]:
    plan = report.plan
    return [
        f"# engine: {plan.engine} ({reason}); level {plan.level}: {report.reason}",
        f"# predicted peak {human(plan.predicted_peak_bytes)} of a {human(plan.budget_bytes)} budget "
        f"({plan.device.budget_reason})",
        *warning_lines(plan),
    ]


def warning_lines(plan: Plan) -> list[str]:
    """What the plan gives up, and environment settings that slow the engine down (the doctor's rules)."""
    from mineru_fit.doctor import env_findings

    found = [f"{f.topic}: {f.message}" for f in env_findings(os.environ) if f.severity == "warn"]
    return [f"# warning: {w}" for w in [*plan.warnings, *found]]


def _print_command(lines: list[str], env: dict[str, str], shell_line: str) -> None:
    for line in lines:
        typer.echo(line)
    typer.echo("env:")
    for key, value in env.items():
        typer.echo(f"  {key}={value}")
    typer.echo("command:")
    typer.echo(f"  {shell_line}")


def _serve_builtin(args: ServeArgs, settings: Settings, plan: Plan, report: PlanReport, reason: str,
                   extra_args: Sequence[str]) -> None:
    if extra_args:
        raise UsageError(f"the built-in engine takes no pass-through flags ({' '.join(extra_args)}) — drop them")
    if args.dry_run:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.env.items())
        _print_command(_header(report, reason) + [f"# note: {n}" for n in plan.notes], dict(plan.env),
                       (env + " " if env else "") + shlex.join(plan.argv))
        return
    from mineru_fit.engines.builtin import BuiltinOptions, run_server

    device = None
    if plan.device.device == "cuda":
        device = f"cuda:{args.gpu}" if args.gpu is not None else settings.device_mode
    options = BuiltinOptions.from_plan(plan, plan.model, host=args.host or _option(plan, "--host"),
                                       port=args.port or int(_option(plan, "--port") or 30000), device=device,
                                       **args.builtin_overrides)
    for line in _header(report, reason) + [f"# note: {n}" for n in plan.notes]:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    err_console.print(f"built-in engine at level {plan.level} on {plan.device.name} "
                      f"(predicted peak {human(plan.predicted_peak_bytes)})", highlight=False)
    run_server(options)


def _option(plan: Plan, flag: str) -> Optional[str]:
    argv = plan.argv
    return next((argv[i + 1] for i, t in enumerate(argv[:-1]) if t == flag), None)


def level_runs(report: PlanReport, settings: Settings, *, max_attempts: int, dry_run: bool,
               extra_args: Sequence[str] = ()) -> tuple[list["LevelRun"], list[str]]:
    """The chosen level and the lighter ones to step down to, each fitted to the installed engine;
    and notes (# lines) on what was adapted, the fallback order and levels skipped."""
    from mineru_fit.engines import launch
    from mineru_fit.engines.flags import installed_version, load_flags
    from mineru_fit.engines.supervisor import LevelRun
    from mineru_fit.engines.vllm import find_vl_utils

    plan = report.plan
    executable = settings.sglang_executable if plan.engine == "sglang" else settings.vllm_executable
    launcher = shlex.split(executable) if executable else None
    if dry_run or launcher is not None:
        installed = installed_version(load_flags(plan.engine).distribution)
    else:
        installed = launch.require_installed(plan.engine)
    vl_utils = find_vl_utils() if plan.engine == "vllm" else None
    order = [level.value for level in MODEL_LEVELS]
    candidates = [p for p in report.levels if p.level in order and order.index(p.level) >= order.index(plan.level)]
    runs: list[LevelRun] = []
    skipped: list[str] = []
    for candidate in candidates[:max_attempts]:
        try:
            command = launch.engine_command(candidate, installed=installed, launcher=launcher,
                                            extra_args=extra_args, vl_utils=vl_utils)
        except EngineFlagError as exc:
            if candidate.level == plan.level:
                raise
            skipped.append(f"{candidate.level} ({exc})")
            continue
        runs.append(LevelRun(candidate, command))
    chosen = runs[0].command
    notes = [f"# {n}" for n in chosen.notes] + [f"# note: {n}" for n in plan.notes]
    fallback = " → ".join(r.plan.level for r in runs[1:]) or "none (no lighter level left)"
    notes.append(f"# if memory runs out: {fallback} (at most {max_attempts} attempts)")
    notes += [f"# skipped: {s}" for s in skipped]
    return runs, notes


def _serve_engine(args: ServeArgs, settings: Settings, report: PlanReport, reason: str,
                  extra_args: Sequence[str]) -> None:
    from mineru_fit.engines.supervisor import Supervisor, SupervisorOptions

    runs, notes = level_runs(report, settings, max_attempts=args.max_attempts, dry_run=args.dry_run,
                             extra_args=extra_args)
    chosen = runs[0].command
    if args.dry_run:
        _print_command(_header(report, reason) + notes, dict(chosen.env), chosen.shell_line())
        return
    for line in _header(report, reason) + notes:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    supervisor = Supervisor(runs, report=lambda text: err_console.print(text, markup=False, highlight=False, soft_wrap=True),
                            options=SupervisorOptions(health_timeout_s=args.health_timeout_s))
    raise typer.Exit(supervisor.run())
