"""`mineru-sglang-server`: the guide's command, SGLang held to a plan.

    mineru-sglang-server --mem-fraction-static 0.3 --load-in-4bit --max-model-len 2048

The guide's flags are planner inputs; the SGLang command is the plan's. Options SGLang knows
and we do not (e.g. --enable-torch-compile) pass through to SGLang untouched, as they did
with MinerU's own mineru-sglang-server.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.markup import escape

from mineru_fit.cli.app import err_console
from mineru_fit.cli.options import Gpu, Gpus, LevelChoice, Simulate, Vram
from mineru_fit.cli.serve_run import ServeArgs, run_serve
from mineru_fit.errors import MineruFitError

guide_app = typer.Typer(
    name="mineru-sglang-server",
    help="Start SGLang for MinerU2.5 held to a memory plan (the guide's command).",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@guide_app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sglang_server(
    ctx: typer.Context,
    mem_fraction_static: Optional[float] = typer.Option(None, "--mem-fraction-static", help="Share of free GPU memory for weights + KV."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="4-bit weights (bitsandbytes)."),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", help="8-bit weights (fp8 where the GPU has it)."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", "--context-length", help="Context length per request."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, bfloat16, float16 or float32."),
    kv_cache_dtype: Optional[str] = typer.Option(None, "--kv-cache-dtype", help="auto or fp8."),
    tp_size: Optional[int] = typer.Option(None, "--tp-size", "--tp", help="Tensor-parallel GPUs."),
    dp_size: Optional[int] = typer.Option(None, "--dp-size", "--dp", help="Data-parallel replicas."),
    model: Optional[str] = typer.Option(None, "--model-path", "--model", help="Model id or local directory."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="Port (default 30000)."),
    level: LevelChoice = typer.Option(LevelChoice.auto, "--level", help="Optimisation level, or auto."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Requests in flight (default 8)."),
    vram: Vram = None,
    gpus: Gpus = None,
    gpu: Gpu = None,
    simulate: Simulate = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact command and environment; start nothing."),
    health_timeout: float = typer.Option(900.0, "--health-timeout", min=1, help="Seconds to wait for /health."),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1, help="Levels to try when memory runs out."),
) -> None:
    """Plan SGLang for this GPU with the guide's flags and start it (or print it with --dry-run)."""
    run_serve(
        ServeArgs(
            engine="sglang", level=level.value, vram=vram, gpus=gpus, gpu=gpu, simulate=simulate, concurrency=concurrency,
            max_model_len=max_model_len, mem_fraction_static=mem_fraction_static, load_in_4bit=load_in_4bit,
            load_in_8bit=load_in_8bit, dtype=dtype, kv_cache_dtype=kv_cache_dtype, tp_size=tp_size, dp_size=dp_size,
            model=model, host=host, port=port, dry_run=dry_run, health_timeout_s=health_timeout,
            max_attempts=max_attempts,
        ),
        extra_args=ctx.args,
    )


def main() -> None:
    """Console-script entry: one line and an exit code for our errors, never a traceback."""
    try:
        guide_app()
    except MineruFitError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
