"""`mineru-fit serve`: start an engine held to a plan.

sglang/vllm run as child processes under the supervisor (health check, startup memory record,
step-down on out-of-memory); builtin runs in this process. Flags after `--` go to the engine
untouched. --dry-run prints the exact command and environment, also where the engine is not
installed (then for the newest version we support).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mineru_fit.cli.app import app
from mineru_fit.cli.plan_cmd import EngineChoice, LevelChoice
from mineru_fit.cli.serve_run import ServeArgs, run_serve


@app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def serve_command(
    ctx: typer.Context,
    engine: EngineChoice = typer.Option(EngineChoice.auto, "--engine", help="sglang, vllm, builtin or auto."),
    level: LevelChoice = typer.Option(LevelChoice.auto, "--level", help="Optimisation level, or auto."),
    vram: Optional[float] = typer.Option(None, "--vram", help="Plan for a card of this many GiB."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="Plan for CUDA GPU N on this machine."),
    simulate: Optional[Path] = typer.Option(None, "--simulate", help="Plan for the GPUs in a recorded snapshot."),
    gpus: Optional[int] = typer.Option(None, "--gpus", min=1, help="How many identical GPUs (with --vram)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Requests in flight (default 8)."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", help="Context length per request."),
    mem_fraction_static: Optional[float] = typer.Option(None, "--mem-fraction-static", help="Memory share (SGLang's name)."),
    gpu_memory_utilization: Optional[float] = typer.Option(None, "--gpu-memory-utilization", help="Memory share (vLLM's name)."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="4-bit weights (bitsandbytes NF4)."),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", help="8-bit weights (int8 or fp8 by engine)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, bfloat16, float16 or float32."),
    kv_cache_dtype: Optional[str] = typer.Option(None, "--kv-cache-dtype", help="auto or fp8 (SGLang/vLLM)."),
    tp_size: Optional[int] = typer.Option(None, "--tp-size", help="Tensor-parallel GPUs (the plan is per GPU)."),
    dp_size: Optional[int] = typer.Option(None, "--dp-size", help="Data-parallel replicas."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id or local directory."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="Port (default 30000)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact command and environment; start nothing."),
    health_timeout: float = typer.Option(900.0, "--health-timeout", min=1, help="Seconds to wait for /health."),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1, help="Levels to try when memory runs out."),
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
