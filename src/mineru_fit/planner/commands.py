"""The exact command and environment a plan implies, per engine. Pure: values in, argv out.

Flag names follow the engines' own argument parsers (SGLang's server_args, vLLM's
EngineArgs) in the newest version listed in engines/data/; engines/flags.py checks them
against the installed version (renaming or refusing) before anything starts.
"""

from __future__ import annotations

import json
from typing import Optional

from mineru_fit.planner import constants as C
from mineru_fit.planner.equations import Resolved, Sizing
from mineru_fit.planner.levels import Quant
from mineru_fit.settings import DEFAULT_ALLOC_CONF


def _alloc_env(user_alloc_conf: Optional[str]) -> dict[str, str]:
    # A value the user set is theirs and stays (settings.DEFAULT_ALLOC_CONF says why ours).
    return {"PYTORCH_CUDA_ALLOC_CONF": user_alloc_conf or DEFAULT_ALLOC_CONF}


def builtin_command(model: str, host: str, port: int, r: Resolved, s: Sizing, device: str,
                    user_alloc_conf: Optional[str]) -> tuple[list[str], dict[str, str]]:
    argv = [
        "mineru-fit", "serve", "--engine", "builtin", "--model", model,
        "--host", host, "--port", str(port), "--level", r.level.value,
        "--dtype", r.dtype, "--max-model-len", str(r.context.max_model_len),
        "--max-batch-size", str(r.batch), "--max-image-pixels", str(r.context.max_image_pixels),
        "--max-new-tokens", str(r.context.max_new_tokens),
    ]
    if s.fraction is not None:
        argv += ["--mem-fraction-static", f"{s.fraction:g}"]
    if r.quant is Quant.nf4:
        argv.append("--load-in-4bit")
    elif r.quant is Quant.int8:
        argv.append("--load-in-8bit")
    if r.dp_size > 1:
        argv += ["--dp-size", str(r.dp_size)]
    env = _alloc_env(user_alloc_conf) if device == "cuda" else {}
    if device == "cpu":
        env["MINERU_DEVICE_MODE"] = "cpu"
    return argv, env


def sglang_command(model: str, host: str, port: int, r: Resolved, s: Sizing,
                   user_alloc_conf: Optional[str]) -> tuple[list[str], dict[str, str]]:
    argv = [
        "python", "-m", "sglang.launch_server", "--model-path", model,
        "--host", host, "--port", str(port), "--dtype", r.dtype,
        "--context-length", str(r.context.max_model_len),
        "--mem-fraction-static", f"{s.fraction:g}",
    ]
    if r.sized_kv:
        argv += ["--max-total-tokens", str(s.kv_tokens), "--max-running-requests", str(r.batch),
                 "--chunked-prefill-size", str(r.chunk_tokens)]
    if r.quant is Quant.fp8:
        argv += ["--quantization", "fp8"]
    elif r.quant is Quant.nf4:
        argv += ["--quantization", "bitsandbytes", "--load-format", "bitsandbytes"]
    if r.kv_dtype == "fp8":
        argv += ["--kv-cache-dtype", "fp8_e5m2"]
    if not r.cuda_graphs:
        argv.append("--disable-cuda-graph")
    elif r.sized_kv:
        argv += ["--cuda-graph-max-bs", str(r.graph_bs)]
    if r.tp_size > 1:
        argv += ["--tp-size", str(r.tp_size)]
    if r.dp_size > 1:
        argv += ["--dp-size", str(r.dp_size)]
    argv.append("--enable-metrics")
    # SGLang's own Qwen-VL default is 16384·28·28 pixels per image: pin the plan's cap.
    env = {"SGLANG_IMAGE_MAX_PIXELS": str(r.context.max_image_pixels)}
    if user_alloc_conf:
        env["PYTORCH_CUDA_ALLOC_CONF"] = user_alloc_conf
    return argv, env


def vllm_command(model: str, host: str, port: int, r: Resolved, s: Sizing,
                 user_alloc_conf: Optional[str]) -> tuple[list[str], dict[str, str]]:
    argv = [
        "vllm", "serve", model, "--host", host, "--port", str(port), "--dtype", r.dtype,
        "--max-model-len", str(r.context.max_model_len),
        "--gpu-memory-utilization", f"{s.fraction:g}",
    ]
    if r.sized_kv:
        argv += ["--kv-cache-memory-bytes", str(s.terms["kv_cache"]), "--max-num-seqs", str(r.batch),
                 "--max-num-batched-tokens", str(r.chunk_tokens)]
    if r.quant is Quant.fp8:
        argv += ["--quantization", "fp8"]
    elif r.quant is Quant.nf4:
        argv += ["--quantization", "bitsandbytes"]
    if r.kv_dtype == "fp8":
        argv += ["--kv-cache-dtype", "fp8"]
    if not r.cuda_graphs:
        argv.append("--enforce-eager")
    elif r.sized_kv:
        # Graphs for batch sizes the plan never runs are memory for nothing (the plan counts graph_bs).
        argv += ["--max-cudagraph-capture-size", str(r.graph_bs)]
    # No video: V1 profiles the modality with the largest item, and an unlimited video (default 999)
    # would be profiled at up to 14 frames, ~7× a page's vision activations (engine_memory.py).
    argv += [
        "--limit-mm-per-prompt", json.dumps({"image": C.IMAGES_PER_REQUEST, "video": 0}),
        "--mm-processor-kwargs", json.dumps({"max_pixels": r.context.max_image_pixels}),
    ]
    if r.tp_size > 1:
        argv += ["--tensor-parallel-size", str(r.tp_size)]
    if r.dp_size > 1:
        argv += ["--data-parallel-size", str(r.dp_size)]
    env = {"PYTORCH_CUDA_ALLOC_CONF": user_alloc_conf} if user_alloc_conf else {}
    return argv, env


def flash_command() -> tuple[list[str], dict[str, str]]:
    return ["mineru-fit", "parse", "--tier", "flash"], {}
