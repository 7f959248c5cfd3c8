"""The guide's flags and the planner's, declared once for every command that takes them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated


class EngineChoice(str, Enum):
    auto = "auto"
    builtin = "builtin"
    sglang = "sglang"
    vllm = "vllm"


class LevelChoice(str, Enum):
    auto = "auto"
    none = "none"
    basic = "basic"
    aggressive = "aggressive"
    extreme = "extreme"
    flash = "flash"


Vram = Annotated[Optional[float], typer.Option("--vram", help="Plan for a card of this many GiB (hypothetical).")]
Gpu = Annotated[Optional[int], typer.Option("--gpu", help="Plan for (and run on) CUDA GPU N of this machine.")]
Simulate = Annotated[Optional[Path], typer.Option("--simulate", help="Plan for the GPUs in a recorded snapshot (JSON).")]
Gpus = Annotated[Optional[int], typer.Option("--gpus", min=1, help="How many identical GPUs (with --vram; "
                                                                  "default: --tp-size × --dp-size).")]
Engine = Annotated[EngineChoice, typer.Option("--engine", help="builtin, sglang, vllm or auto.")]
Level = Annotated[LevelChoice, typer.Option("--level", help="Optimisation level, or auto.")]
Concurrency = Annotated[Optional[int], typer.Option("--concurrency", help="Requests in flight (default 8).")]
MaxModelLen = Annotated[Optional[int], typer.Option("--max-model-len", help="Context length per request.")]
MemFractionStatic = Annotated[Optional[float], typer.Option("--mem-fraction-static",
                                                           help="Memory share (SGLang's name; vLLM's too).")]
GpuMemoryUtilization = Annotated[Optional[float], typer.Option("--gpu-memory-utilization",
                                                              help="Memory share (vLLM's name).")]
LoadIn4bit = Annotated[bool, typer.Option("--load-in-4bit", help="4-bit weights (bitsandbytes NF4).")]
LoadIn8bit = Annotated[bool, typer.Option("--load-in-8bit", help="8-bit weights (int8 or fp8 by engine).")]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="auto, bfloat16, float16 or float32.")]
KvCacheDtype = Annotated[Optional[str], typer.Option("--kv-cache-dtype", help="auto or fp8 (SGLang/vLLM).")]
TpSize = Annotated[Optional[int], typer.Option("--tp-size", help="Tensor-parallel GPUs (the plan is per GPU).")]
DpSize = Annotated[Optional[int], typer.Option("--dp-size", help="Data-parallel replicas.")]
Model = Annotated[Optional[str], typer.Option("--model", help="Model id or local directory.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the exact command and environment; start nothing.")]
HealthTimeout = Annotated[float, typer.Option("--health-timeout", min=1, help="Seconds to wait for /health.")]
MaxAttempts = Annotated[int, typer.Option("--max-attempts", min=1, help="Levels to try when memory runs out.")]
