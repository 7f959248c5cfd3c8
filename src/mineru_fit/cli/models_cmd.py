"""`mineru-fit models list|where|download|spec`: find, fetch and inspect MinerU2.5 checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mineru_fit.cli.app import app
from mineru_fit.errors import ModelNotFoundError
from mineru_fit.settings import ModelSource, load_settings
from mineru_fit.units import human

models_app = typer.Typer(
    help="Find, download and inspect MinerU2.5 models (specs come from config.json and safetensors headers).",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
console = Console(highlight=False)

_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


@models_app.command("list")
def list_cmd(json_out: bool = _JSON) -> None:
    """The known MinerU2.5 models and where their downloaded copies are."""
    from mineru_fit.models import list_models

    settings = load_settings()
    rows = list_models(models_dir=settings.models_dir)
    if json_out:
        payload = [
            {
                "name": r.model.name,
                "hf_id": r.model.hf_id,
                "modelscope_id": r.model.modelscope_id,
                "present": r.present,
                "path": str(r.path) if r.path else None,
            }
            for r in rows
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    table = Table(title="MinerU2.5 models")
    table.add_column("id (Hugging Face / ModelScope)")
    table.add_column("downloaded at")
    for r in rows:
        ids = f"{r.model.hf_id}\n{r.model.modelscope_id}"
        table.add_row(ids, str(r.path) if r.path else "[dim]not downloaded — planning uses the shipped spec[/]")
    console.print(table)


@models_app.command("where")
def where_cmd(model_id: str = typer.Argument(..., metavar="ID", help="Hub id, e.g. opendatalab/MinerU2.5-2509-1.2B.")) -> None:
    """Print the folder of a downloaded model; exit 1 if it is not downloaded."""
    from mineru_fit.models import where

    settings = load_settings()
    path = where(model_id, models_dir=settings.models_dir)
    if path is None:
        raise ModelNotFoundError(f"{model_id} is not downloaded — run `mineru-fit models download {model_id}`")
    typer.echo(str(path))


@models_app.command("download")
def download_cmd(
    model_id: Optional[str] = typer.Argument(None, metavar="[ID]", help="Hub id (default: MINERU_FIT_MODEL)."),
    source: Optional[ModelSource] = typer.Option(
        None, "--source", help="huggingface, modelscope or local (default: MINERU_MODEL_SOURCE)."
    ),
    dest: Optional[Path] = typer.Option(
        None, "--dir", help="Download into this folder (local: the folder to use) instead of the hub cache."
    ),
) -> None:
    """Download a model (or adopt a local folder) and print where it is."""
    from mineru_fit.models import download

    settings = load_settings()
    path = download(
        model_id or settings.model,
        source or settings.model_source,
        dest=dest,
        timeout_s=settings.hub_timeout_s,
        models_dir=settings.models_dir,
    )
    typer.echo(str(path))


@models_app.command("spec")
def spec_cmd(
    model: Optional[str] = typer.Argument(None, metavar="[ID|DIR]", help="Hub id or model folder (default: MINERU_FIT_MODEL)."),
    json_out: bool = _JSON,
) -> None:
    """What a model is made of: parameters per part, bytes per dtype, KV bytes per token."""
    from mineru_fit.models import load_spec
    from mineru_fit.models.summary import spec_summary

    settings = load_settings()
    summary = spec_summary(load_spec(model or settings.model, models_dir=settings.models_dir))
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    _render_spec(summary)


def _render_spec(s: dict) -> None:
    origin = "safetensors headers" if s["tensors_from_header"] else "derived from config.json (no header read)"
    console.print(f"[bold]{s['name']}[/]  ({s['source']})")
    console.print(f"tensors: {s['tensor_count']}, {origin}")
    table = Table(show_header=True)
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for part, n in s["params_by_part"].items():
        table.add_row(part, f"{n:,}")
    table.add_row("[bold]total[/]", f"[bold]{s['param_count']:,}[/]")
    console.print(table)
    for dtype, n in s["bytes_by_dtype"].items():
        console.print(f"weights {dtype}: {human(n)} ({n:,} bytes)")
    kv = s["kv_bytes_per_token"]
    console.print(f"KV cache per token: {kv['bf16']:,} bytes bf16, {kv['fp8']:,} bytes fp8")
    t, v, i = s["text"], s["vision"], s["image"]
    console.print(
        f"text: {t['num_layers']} layers, hidden {t['hidden_size']}, {t['num_heads']} heads / {t['num_kv_heads']} KV, "
        f"head_dim {t['head_dim']}, vocab {t['vocab_size']}, tied embeddings {t['tie_word_embeddings']}"
    )
    console.print(
        f"vision: depth {v['depth']}, embed {v['embed_dim']}, {v['num_heads']} heads, patch {v['patch_size']}, "
        f"merge {v['spatial_merge_size']} ({v['pixels_per_token']} pixels per LLM token)"
    )
    console.print(f"image pixels: {i['min_pixels']:,} .. {i['max_pixels']:,}")
