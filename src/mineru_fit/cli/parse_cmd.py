"""`mineru-fit parse`: PDFs and images -> Markdown + MinerU's JSON, inside the memory plan; `sample-pdf`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from mineru_fit.cli.app import app
from mineru_fit.cli.hardware import resolve_hardware
from mineru_fit.cli.parse_view import RichObserver, render_summary
from mineru_fit.cli.options import LevelChoice
from mineru_fit.cli.plan_cmd import request_from_flags
from mineru_fit.errors import UsageError
from mineru_fit.parsing import DEFAULT_DPI, PageSelection, ParseOptions, VlmSetup, choose_tier, parse_documents
from mineru_fit.parsing.renderers.export import export, plan_export
from mineru_fit.planner import PlanReport, make_report
from mineru_fit.settings import Settings, load_settings

console = Console(stderr=True)


def _quiet_libraries() -> None:
    """docvortex and mineru-vl-utils log through loguru at DEBUG; pypdfium2 warns on every bitmap."""
    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    logging.getLogger("pypdfium2").setLevel(logging.INFO if verbose else logging.ERROR)
    try:
        from loguru import logger
    except ImportError:
        return
    logger.remove()
    logger.add(sys.stderr, level="INFO" if verbose else "ERROR")


def _model_dir(model: Optional[str], settings: Settings) -> tuple[str, Optional[Path]]:
    """The model asked for and its folder here, if any (a --model folder that is not a model is an error)."""
    from mineru_fit.models import where
    from mineru_fit.models.cache import is_model_dir

    model_id = model or settings.model
    path = Path(model_id).expanduser()
    if model is not None and path.exists():
        if not (path.is_dir() and is_model_dir(path)):
            raise UsageError(f"--model {model}: not a model folder (config.json and model.safetensors expected)")
        return model_id, path
    return model_id, where(model_id, models_dir=settings.models_dir)


def _plan(model_dir: Path, settings: Settings, level: str, flags: dict[str, Any]) -> PlanReport:
    from mineru_fit.models import load_spec

    # The budget is this machine's: what is free on the GPU (capped by MINERU_VIRTUAL_VRAM_SIZE), or RAM.
    hw = resolve_hardware(settings, gpu_index=flags.pop("gpu"))
    request = request_from_flags(engine="builtin", level=level, model=str(model_dir), **flags)
    return make_report(load_spec(model_dir), hw, request, user_alloc_conf=settings.pytorch_cuda_alloc_conf)


def _levels(report: PlanReport) -> tuple[Any, ...]:
    """The chosen level and every model level below it: where the engine steps down to on OOM."""
    models = [p for p in report.levels if p.level != "flash"]
    names = [p.level for p in models]
    start = names.index(report.chosen_level) if report.chosen_level in names else len(models) - 1
    return tuple(models[start:])


def _device(settings: Settings) -> Optional[str]:
    mode = settings.device_mode
    return mode if mode and (mode.startswith("cuda:") or mode == "cpu") else None


@app.command("parse")
def parse_command(
    inputs: list[Path] = typer.Argument(..., help="PDF/PNG/JPEG/WebP files or folders of them."),
    output: Path = typer.Option(Path("output"), "--output", "-o", help="Output folder: <out>/<name>/<tier>/ (with -f: a file, or a folder of <name>.<ext>)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="Write one MinerU 4 output: markdown, middle_json, structured_content or zip."),
    tier: str = typer.Option("auto", "--tier", help="auto, vlm (MinerU2.5) or flash (model-free, born-digital PDFs)."),
    pages: Optional[str] = typer.Option(None, "--pages", help="Pages to parse, 1-based: 1-5,9 or 3-."),
    password: Optional[str] = typer.Option(None, "--password", help="Password of encrypted PDFs."),
    dpi: int = typer.Option(DEFAULT_DPI, "--dpi", min=36, max=600, help="PDF render resolution for the vlm tier."),
    force: bool = typer.Option(False, "--force", help="Redo every page (ignore checkpoints of earlier runs)."),
    server: Optional[str] = typer.Option(None, "--server", help="An OpenAI-compatible MinerU2.5 server URL."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id or local directory (in-process vlm)."),
    level: LevelChoice = typer.Option(LevelChoice.auto, "--level", help="Optimisation level of the in-process engine."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="Run on CUDA GPU N."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Pages in flight (default: the plan's batch)."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", help="Context length per request."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Lower the output cap below the plan's."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="4-bit weights (bitsandbytes NF4)."),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", help="8-bit weights (bitsandbytes int8)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, bfloat16, float16 or float32."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="auto|local|ADDRESS",
                                      help="Parse on a Ray cluster, one engine per GPU (docs/scale-out.md)."),
    ray_engine: str = typer.Option("builtin", "--ray-engine", help="With --ray: builtin, sglang or vllm per GPU."),
) -> None:
    """Parse documents to Markdown and MinerU's content_list.json, resuming where an earlier run stopped."""
    _quiet_libraries()
    if level is LevelChoice.flash:  # the model-free level is the flash tier
        if tier == "vlm":
            raise UsageError("--level flash is the model-free tier: use --tier flash, or a model level with --tier vlm")
        tier = "flash"
    settings = load_settings()
    selection = PageSelection.parse(pages) if pages else None
    work_dir, dest = plan_export(output, fmt, inputs) if fmt else (output, None)
    options = ParseOptions(out_dir=work_dir, pages=selection, password=password, dpi=dpi, force=force)
    model_id, model_dir = _model_dir(model, settings) if not server else (model or settings.model, None)
    if ray is not None:  # every GPU of the cluster plans for itself: nothing here is planned for this machine
        from mineru_fit.cli.parse_ray import parse_on_cluster

        if gpu is not None:
            raise UsageError("--gpu picks a GPU of this machine; with --ray every GPU of the cluster runs an actor")
        flags = dict(engine="builtin", level=level.value, concurrency=concurrency, max_model_len=max_model_len,
                     load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, dtype=dtype)
        raise typer.Exit(parse_on_cluster(console, inputs, options, ray, tier=tier, server=server, model_id=model_id,
                                          model_dir=model_dir, request=request_from_flags(**flags), engine=ray_engine,
                                          max_new_tokens=max_new_tokens, as_json=as_json, progress=not no_progress))
    report = None
    if tier != "flash" and not server and model_dir is not None:
        report = _plan(model_dir, settings, level.value, dict(
            gpu=gpu, concurrency=concurrency, max_model_len=max_model_len, load_in_4bit=load_in_4bit,
            load_in_8bit=load_in_8bit, dtype=dtype,
        ))
    choice = choose_tier(tier, server_url=server, model_dir=model_dir, model_name=model_id,
                         plan_level=report.chosen_level if report else None, plan_reason=report.reason if report else "")
    console.print(f"[bold]tier:[/] [bold green]{choice.tier}[/] — {escape(choice.reason)}", soft_wrap=True, highlight=False)
    if choice.tier == "vlm" and report is not None:
        for warning in report.plan.warnings:  # what the plan gives up (a short context), as `plan` says it
            console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    setup = None
    if choice.tier == "vlm":
        setup = VlmSetup(
            server_url=server, model_dir=model_dir, levels=_levels(report) if report else (),
            device=f"cuda:{gpu}" if gpu is not None else _device(settings), max_new_tokens=max_new_tokens,
            concurrency=concurrency, max_model_len=max_model_len, device_mode=settings.device_mode,
            model_name=model_id,
        )
    with RichObserver(console, enabled=not no_progress) as observer:
        result = parse_documents(inputs, options, choice, vlm=setup, observer=observer)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    render_summary(console, result)
    for done in result.files if dest is not None else ():
        written = export(done.output_dir, done.name, str(fmt), dest(done.name)) if done.output_dir else None
        console.print(f"{fmt}: {escape(str(written))}" if written else f"{fmt}: nothing converted in {done.name}")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command("sample-pdf")
def sample_pdf_command(
    out: Path = typer.Argument(Path("sample.pdf"), help="Where to write the sample PDF."),
) -> None:
    """Write a small multi-page born-digital PDF (headings, a list, a table, a figure) made offline."""
    from mineru_fit.parsing.sample import write_sample_pdf

    path = write_sample_pdf(out)
    typer.echo(str(path))
