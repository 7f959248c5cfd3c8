"""`mineru-fit compare`: what a level costs on your own pages — text agreement per block type and pages/s."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mineru_fit.cli.app import app
from mineru_fit.cli.hardware import resolve_hardware
from mineru_fit.cli.parse_cmd import _model_dir as model_dir_for
from mineru_fit.cli.parse_cmd import _quiet_libraries
from mineru_fit.cli.plan_cmd import request_from_flags
from mineru_fit.errors import UsageError
from mineru_fit.parsing import DEFAULT_DPI, PageSelection, ParseOptions
from mineru_fit.settings import load_settings

console = Console()
err_console = Console(stderr=True)


def _percent(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.1%}"


def render(comparison, out_dir: Optional[Path]) -> None:
    levels = comparison.levels
    reference, others = levels[0], levels[1:]
    speed = Table(title="speed", header_style="bold")
    for col in ("level", "pages", "failed", "pages/s", "seconds (with loading)"):
        speed.add_column(col, justify="left" if col == "level" else "right")
    for run in comparison.runs:
        speed.add_row(run.level, str(run.pages_ok), str(run.pages_failed), f"{run.pages_per_s:.2f}",
                      f"{run.seconds:.1f}")
    console.print(speed)
    table = Table(title=f"text agreement with {reference} (1 − normalized edit distance)", header_style="bold")
    table.add_column("block type")
    for level in levels:
        table.add_column(f"{level} blocks", justify="right")
    for level in others:
        table.add_column(f"{level} agreement", justify="right")
    for row in comparison.types:
        table.add_row(row.block_type, *map(str, row.blocks), *map(_percent, row.agreement))
    table.add_row("[bold]all[/]", *[str(len(r.items)) for r in comparison.runs], *map(_percent, comparison.overall))
    console.print(table)
    for run in comparison.runs:
        for error in run.errors:
            console.print(f"[yellow]{escape(run.level)}:[/] {escape(error)}", soft_wrap=True, highlight=False)
    for note in comparison.notes:
        console.print(f"[dim]note:[/] {escape(note)}", soft_wrap=True, highlight=False)
    if out_dir is not None:
        console.print(f"outputs: {out_dir}/<level>/", highlight=False)


@app.command("compare")
def compare_command(
    inputs: list[Path] = typer.Argument(..., help="PDF/PNG/JPEG/WebP files or folders of them."),
    levels: str = typer.Option("none,extreme", "--levels", help="Levels to compare, the first is the reference."),
    pages: Optional[str] = typer.Option(None, "--pages", help="Pages to parse, 1-based: 1-5,9 or 3-."),
    password: Optional[str] = typer.Option(None, "--password", help="Password of encrypted PDFs."),
    dpi: int = typer.Option(DEFAULT_DPI, "--dpi", min=36, max=600, help="PDF render resolution."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id or local directory."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="Run on CUDA GPU N."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Pages in flight (default 8)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1,
                                                 help="Lower the output cap below each level's plan."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Keep each level's outputs in DIR/<level>/ "
                                          "(default: a temporary folder, removed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Parse the same pages at two levels and show what the second costs: text agreement per block type, pages/s."""
    from mineru_fit.models import load_spec
    from mineru_fit.parsing.compare import compare_levels, level_setups
    from mineru_fit.planner import make_report

    _quiet_libraries()
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:  # before any model is loaded, twice
        raise UsageError(f"{', '.join(missing)} does not exist — check the path")
    names = [n.strip() for n in levels.split(",") if n.strip()]
    settings = load_settings()
    model_id, model_dir = model_dir_for(model, settings)
    spec = load_spec(model_dir if model_dir is not None else model_id, models_dir=settings.models_dir)
    hw = resolve_hardware(settings, gpu_index=gpu)
    request = request_from_flags(engine="builtin", level="auto", concurrency=concurrency,
                                 model=str(model_dir) if model_dir else model_id)
    report = make_report(spec, hw, request, user_alloc_conf=settings.pytorch_cuda_alloc_conf)
    device = f"cuda:{gpu}" if gpu is not None else None
    setups, notes = level_setups(report, names, model_dir, max_new_tokens=max_new_tokens, device=device,
                                 model_name=model_id)
    selection = PageSelection.parse(pages) if pages else None
    say = (lambda text: err_console.print(text, markup=False, highlight=False, soft_wrap=True))
    with tempfile.TemporaryDirectory(prefix="mineru-fit-compare-") as scratch:
        out_dir = output if output is not None else Path(scratch)
        options = ParseOptions(out_dir=out_dir, pages=selection, password=password, dpi=dpi)
        comparison = compare_levels(inputs, setups, options, notes=notes, say=say)
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), indent=2))
    else:
        render(comparison, output)
    if any(r.pages_ok == 0 for r in comparison.runs):
        raise typer.Exit(1)
