"""`mineru-fit doctor`: what is installed, the GPU, the settings in effect, and what hurts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mineru_fit.cli.app import app
from mineru_fit.errors import SettingsError

console = Console()
_STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "error": "bold red"}


@app.command("doctor")
def doctor_command(
    simulate: Optional[Path] = typer.Option(None, "--simulate", help="Read the GPUs from a recorded snapshot."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check the install, the GPU and driver, the environment and the model; exit 1 on errors."""
    from mineru_fit import doctor
    from mineru_fit.doctor import PACKAGES
    from mineru_fit.settings import Settings, load_settings

    settings_error = None
    try:
        settings = load_settings()
    except SettingsError as exc:
        # The doctor reports a bad setting instead of dying on it; the rest uses defaults.
        settings_error = str(exc)
        settings = Settings.model_construct()
    report = doctor.collect(
        settings_error=settings_error,
        device_mode=settings.device_mode,
        model=settings.model,
        models_dir=settings.models_dir,
        virtual_vram_gib=settings.virtual_vram_size_gib,
        simulate=simulate,
    )
    if as_json:
        typer.echo(report.to_json())
        raise typer.Exit(1 if report.has_errors else 0)

    console.print(f"[bold]mineru-fit {report.mineru_fit}[/] · Python {report.python} · {report.platform}")
    packages = Table("package", "version", "extra", header_style="bold", title="installed")
    for name, version in report.packages.items():
        if name == "torchvision" and version is None:
            continue
        extra = PACKAGES.get(name, "")
        if version:
            shown = version
        elif extra == "base":
            shown = "[red]missing[/] (reinstall mineru-fit)"
        else:
            shown = "[dim]not installed[/] " + escape(f"(pip install 'mineru-fit[{extra}]')")
        packages.add_row(name, shown, extra)
    console.print(packages)
    runtime = report.torch_runtime
    if runtime and "error" not in runtime:
        cuda = runtime.get("cuda_build") or "none (CPU build)"
        console.print(f"torch: CUDA build {cuda}, CUDA available: {runtime.get('cuda_available')}, "
                      f"GPUs visible to torch: {runtime.get('device_count')}")
    gpus = report.inventory.get("gpus") or []
    if gpus:
        table = Table("gpu", "name", "memory used / total", "compute", header_style="bold", title="GPUs")
        for g in gpus:
            mem = g.get("memory", {})
            cc = ".".join(str(x) for x in (g.get("compute_capability") or [])) or "?"
            table.add_row(str(g.get("index")), str(g.get("name")),
                          f"{mem.get('used_bytes', 0) / 2**30:.1f} / {mem.get('total_bytes', 0) / 2**30:.1f} GiB", cc)
        console.print(table)
        console.print(f"driver {report.inventory.get('driver_version')}, CUDA driver {report.inventory.get('cuda_driver_version')}")
    else:
        console.print(f"GPU: no CUDA GPU found ({report.inventory.get('reason')})")
    if report.env:
        console.print("environment: " + ", ".join(f"{k}={v}" for k, v in report.env.items()), soft_wrap=True)
    model = report.model
    console.print(f"model: {model['id']} — " + (f"downloaded at {model['path']}" if model["path"] else "not downloaded"))
    for finding in report.findings:
        style = _STYLE.get(finding.severity, "")
        console.print(f"[{style}]{finding.severity:>5}[/] {finding.topic}: {finding.message}", soft_wrap=True)
    if report.has_errors:
        raise typer.Exit(1)
