"""`mineru-fit serve`: start an engine held to a plan.

sglang/vllm run as child processes under the supervisor (health check, startup memory record,
step-down on out-of-memory); builtin runs in this process. Flags after `--` go to the engine
untouched. --dry-run prints the exact command and environment, also where the engine is not
installed (then for the newest version we support).
"""

from __future__ import annotations

from typing import Optional

import typer

from mineru_fit.cli.app import app
from mineru_fit.cli.options import (
    Concurrency, DpSize, DryRun, Dtype, Engine, EngineChoice, Gpu, GpuMemoryUtilization, Gpus,
    HealthTimeout, KvCacheDtype, Level, LevelChoice, LoadIn4bit, LoadIn8bit, MaxAttempts,
    MaxModelLen, MemFractionStatic, Model, Simulate, TpSize, Vram,
)
from mineru_fit.cli.serve_run import ServeArgs, run_serve


@app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def serve_command(
    ctx: typer.Context,
    engine: Engine = EngineChoice.auto,
    level: Level = LevelChoice.auto,
    vram: Vram = None,
    gpu: Gpu = None,
    simulate: Simulate = None,
    gpus: Gpus = None,
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
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="Port (default 30000)."),
    dry_run: DryRun = False,
    health_timeout: HealthTimeout = 900.0,
    max_attempts: MaxAttempts = 3,
    max_batch_size: Optional[int] = typer.Option(None, "--max-batch-size", min=1, help="Built-in engine: batch size."),
    max_image_pixels: Optional[int] = typer.Option(None, "--max-image-pixels", min=1, help="Built-in engine: pixel cap."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Built-in engine: output cap."),
    served_model_name: Optional[str] = typer.Option(None, "--served-model-name",
                                                    help="Built-in engine: the name /v1/models lists."),
    allow_remote_images: bool = typer.Option(False, "--allow-remote-images",
                                             help="Built-in engine: fetch http(s) image URLs (off: data: URLs only)."),
) -> None:
    """Start an engine held to a plan; when memory runs out, step down a level and retry."""
    run_serve(
        ServeArgs(
            engine=engine.value, level=level.value, vram=vram, gpu=gpu, simulate=simulate, gpus=gpus,
            concurrency=concurrency, max_model_len=max_model_len, mem_fraction_static=mem_fraction_static,
            gpu_memory_utilization=gpu_memory_utilization, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit,
            dtype=dtype, kv_cache_dtype=kv_cache_dtype, tp_size=tp_size, dp_size=dp_size, model=model, host=host,
            port=port, dry_run=dry_run, health_timeout_s=health_timeout, max_attempts=max_attempts,
            max_batch_size=max_batch_size, max_image_pixels=max_image_pixels, max_new_tokens=max_new_tokens,
            served_model_name=served_model_name, allow_remote_images=allow_remote_images,
        ),
        extra_args=ctx.args,
    )
