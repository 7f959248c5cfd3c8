"""`mineru-fit plan`: what each level of an engine will use here, and which one fits."""

from __future__ import annotations

import importlib.util
import shlex
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from mineru_fit.cli.app import app
from mineru_fit.cli.options import (
    Concurrency, DpSize, Dtype, Engine, EngineChoice, Gpu, GpuMemoryUtilization, Gpus, KvCacheDtype,
    Level, LevelChoice, LoadIn4bit, LoadIn8bit, MaxModelLen, MemFractionStatic, Model, Simulate,
    TpSize, Vram,
)
from mineru_fit.cli.hardware import resolve_hardware
from mineru_fit.errors import PlanInputError
from mineru_fit.planner import Hardware, Plan, PlanReport, PlanRequest, make_report
from mineru_fit.planner.plan import TERM_KEYS
from mineru_fit.settings import load_settings
from mineru_fit.units import human

console = Console()


def pick_engine(choice: str, hw: Hardware) -> tuple[str, str]:
    """auto: vLLM or SGLang when installed and a CUDA GPU is here, else the built-in engine."""
    if choice != "auto":
        return choice, "asked for with --engine"
    if hw.is_cuda:
        for name in ("vllm", "sglang"):
            if importlib.util.find_spec(name) is not None:
                return name, f"{name} is installed and a CUDA GPU is present"
        return "builtin", "neither vLLM nor SGLang is installed"
    return "builtin", "no CUDA GPU: only the built-in engine runs here"


def request_from_flags(**flags: object) -> PlanRequest:
    try:
        return PlanRequest(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        flag = f"--{where.replace('_', '-')}: " if where else ""
        raise PlanInputError(f"{flag}{msg}") from exc


def _cell(plan: Plan, key: str) -> str:
    return human(plan.terms[key]) if plan.terms[key] else "0"


def render_report(report: PlanReport, hw: Hardware, engine_reason: str, model_name: str) -> None:
    console.print(
        f"[bold]{model_name}[/] on [bold]{hw.name}[/] — budget [bold]{human(hw.budget_bytes)}[/] "
        f"({hw.budget_reason}); engine [bold]{report.engine}[/] ({engine_reason})"
    )
    table = Table(show_lines=False, header_style="bold")
    table.add_column("")
    for plan in report.levels:
        style = "bold green" if plan.level == report.chosen_level else ""
        table.add_column(plan.level + (" ◀" if plan.level == report.chosen_level else ""), justify="right", style=style)
    for key in TERM_KEYS:
        table.add_row(key.replace("_", " "), *[_cell(p, key) for p in report.levels])
    table.add_row("[bold]predicted peak[/]", *[f"[bold]{human(p.predicted_peak_bytes) if p.predicted_peak_bytes else '0'}[/]" for p in report.levels])
    table.add_row("fits", *["[green]yes[/]" if p.fits else "[red]no[/]" for p in report.levels])
    models = [p for p in report.levels if p.engine != "flash"]
    dash = ["—"]
    table.add_row("weights as", *[p.weight_format if p.weight_format != "none" else p.dtype for p in models], *dash)
    table.add_row("KV dtype", *[p.kv_cache_dtype for p in models], *dash)
    table.add_row("KV tokens", *[f"{p.kv_cache_tokens:,}" for p in models], *dash)
    table.add_row("batch", *[str(p.batch_size) for p in models], *dash)
    table.add_row("context", *[f"{p.max_model_len:,}" for p in models], *dash)
    table.add_row("crop pixels", *[f"{p.max_image_pixels:,}" for p in models], *dash)
    table.add_row("max output", *[f"{p.max_new_tokens:,}" for p in models], *dash)
    table.add_row("memory share", *[f"{p.memory_fraction:g}" if p.memory_fraction else "—" for p in models], *dash)
    console.print(table)
    console.print(f"[bold]{'auto picks' if 'asked for' not in report.reason else 'level'}:[/] "
                  f"[bold green]{report.chosen_level}[/] — {report.reason}", soft_wrap=True)
    plan = report.plan
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.env.items())
    console.print("[bold]command:[/]")
    console.print(f"  {env + ' ' if env else ''}{shlex.join(plan.argv)}", soft_wrap=True, highlight=False)
    for note in plan.notes:
        console.print(f"  [dim]note:[/] {note}", soft_wrap=True)
    for warning in plan.warnings:
        console.print(f"  [yellow]warning:[/] {warning}", soft_wrap=True)
    for problem in plan.problems:
        console.print(f"  [red]problem:[/] {problem}", soft_wrap=True)


def render_profiles(spec, engine: str, model: Optional[str], as_json: bool) -> None:
    from mineru_fit.planner.profiles import check_profiles

    checks = check_profiles(spec, engine=engine, model=model)
    if as_json:
        import json

        typer.echo(json.dumps([
            {
                "vram_gib": c.profile.vram_gib, "guide_flags": c.profile.flags, "source": c.profile.source,
                "guide": c.guide_plan.model_dump(), "auto": c.auto_plan.model_dump(),
            }
            for c in checks
        ], indent=2))
        return
    table = Table(title=f"The guide's profiles on {engine}, and what the planner picks", header_style="bold")
    for col in ("card", "guide's flags", "predicted", "fits", "KV tokens", "auto picks"):
        table.add_column(col, justify="left" if col in ("guide's flags", "auto picks") else "right")
    for c in checks:
        g, a = c.guide_plan, c.auto_plan
        table.add_row(
            f"{c.profile.vram_gib} GiB", c.profile.short_flags, human(g.predicted_peak_bytes),
            "[green]yes[/]" if g.fits else "[red]no[/]", f"{g.kv_cache_tokens:,}",
            f"{a.level}, {human(a.predicted_peak_bytes)}",
        )
    console.print(table)
    console.print("[dim]guide's flags: --mem-fraction-static · --load-in-4bit/8bit · --max-model-len, as its per-card "
                  "section gives them. Peaks are predictions (docs/memory-model.md).[/]")


@app.command("plan")
def plan_command(
    vram: Vram = None,
    gpu: Gpu = None,
    simulate: Simulate = None,
    gpus: Gpus = None,
    engine: Engine = EngineChoice.auto,
    level: Level = LevelChoice.auto,
    concurrency: Concurrency = None,
    max_model_len: MaxModelLen = None,
    mem_fraction_static: MemFractionStatic = None,
    gpu_memory_utilization: GpuMemoryUtilization = None,
    load_in_4bit: LoadIn4bit = False,
    load_in_8bit: LoadIn8bit = False,
    dtype: Dtype = None,
    kv_cache_dtype: KvCacheDtype = None,
    tp_size: TpSize = None,
    dp_size: DpSize = None,
    model: Model = None,
    profiles: bool = typer.Option(False, "--profiles", help="The guide's 8/12/16/24 GB profiles beside the planner's."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """What each optimisation level will use, term by term, which one fits, and the command to run it."""
    from mineru_fit.models import load_spec

    settings = load_settings()
    model_id = model or settings.model
    spec = load_spec(model_id, models_dir=settings.models_dir)
    if profiles:
        render_profiles(spec, engine.value if engine is not EngineChoice.auto else "sglang", model, as_json)
        return
    hw = resolve_hardware(settings, vram_gib=vram, gpu_index=gpu, simulate=simulate, gpus=gpus,
                          gpus_used=(tp_size or 1) * (dp_size or 1))
    engine_name, engine_reason = pick_engine(engine.value, hw)
    request = request_from_flags(
        engine=engine_name, level=level.value, concurrency=concurrency, max_model_len=max_model_len,
        mem_fraction_static=mem_fraction_static, gpu_memory_utilization=gpu_memory_utilization,
        load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, dtype=dtype, kv_cache_dtype=kv_cache_dtype,
        tp_size=tp_size, dp_size=dp_size, model=model_id, host=settings.host, port=settings.port,
    )
    report = make_report(spec, hw, request, user_alloc_conf=settings.pytorch_cuda_alloc_conf)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    render_report(report, hw, engine_reason, spec.name)
    if report.plan.level == "flash" and level is LevelChoice.auto:
        from mineru_fit.planner.nearest import nearest_fit

        console.print(f"[bold]nearest:[/] {nearest_fit(spec, hw, request, report)}", soft_wrap=True, highlight=False)
    if hw.is_cuda and engine is EngineChoice.auto and level is LevelChoice.auto:
        others = []
        for name in ("builtin", "sglang", "vllm"):
            if name != engine_name:
                other = make_report(spec, hw, request.model_copy(update={"engine": name}),
                                    user_alloc_conf=settings.pytorch_cuda_alloc_conf).plan
                others.append(f"{name} → {other.level} ({human(other.predicted_peak_bytes)})")
        console.print("[bold]other engines:[/] " + ", ".join(others) + " — see --engine NAME", soft_wrap=True)
