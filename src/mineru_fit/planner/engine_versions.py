"""What each engine version counts when it sizes its KV cache, as data, each rule with its source.

The engines changed their accounting across releases; a plan (or a check against a logged start)
names the version it assumes. Every rule below was read in the engine's own source, in the
release named beside it (wheels from PyPI, read 2026-11-30); docs/memory-model.md lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from mineru_fit.units import GIB

Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    """'0.10.1.1' -> (0, 10, 1, 1); suffixes such as '.post1', 'rc2' or '+cu129' are dropped."""
    core = re.match(r"\s*v?(\d+(?:\.\d+)*)", text or "")
    if core is None:
        raise ValueError(f"not an engine version: {text!r}")
    return tuple(int(part) for part in core.group(1).split("."))


def post_release(text: str) -> int:
    """'0.4.9.post3' -> 3; 0 for a release without a .postN suffix (SGLang moved rules at post releases)."""
    match = re.search(r"\.post(\d+)", text or "")
    return int(match.group(1)) if match else 0


def version_text(version: Version) -> str:
    return ".".join(str(p) for p in version)


# --- vLLM ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmRules:
    """How one vLLM release sizes its KV cache."""

    version: Version
    # V0 (vllm/worker/worker.py) or V1 (vllm/v1/worker/gpu_worker.py). V1 is the default from
    # 0.8.0 (VLLM_USE_V1) and the only engine from 0.11.0.
    engine: str
    # From 0.21.0 the profiler captures the CUDA graphs before sizing KV and subtracts their
    # memory ("CUDA graph memory profiling is enabled (default since v0.21.0)", gpu_worker.py);
    # before, graphs were captured after the KV cache, outside gpu_memory_utilization × total.
    graphs_in_budget: bool
    # Qwen2-VL's profiler sizes its dummy video from max_model_len minus the largest image up to
    # 0.10 (qwen2_vl.py get_num_frames_with_most_features, 0.10.1.1); from 0.11 the video gets the
    # whole length (0.11.0).
    video_minus_image: bool
    # _MAX_FRAMES_PER_VIDEO in qwen2_vl.py: 16 up to 0.10.1.1, 14 in 0.11.0.
    max_video_frames: int

    @property
    def label(self) -> str:
        return f"vLLM {version_text(self.version)} ({self.engine})"


def vllm_rules(version: str, engine: Optional[str] = None) -> VllmRules:
    """The accounting of vLLM `version`; `engine` forces V0 or V1 where a log says which ran."""
    v = parse_version(version)
    default_engine = "v1" if v >= (0, 8, 0) else "v0"
    return VllmRules(
        version=v,
        engine=(engine or default_engine).lower(),
        graphs_in_budget=v >= (0, 21, 0),
        video_minus_image=v < (0, 11, 0),
        max_video_frames=16 if v < (0, 11, 0) else 14,
    )


def vllm_default_batching(total_bytes: int, gpu_name: str, api_server: bool) -> tuple[int, int]:
    """V1's defaults (max_num_batched_tokens, max_num_seqs) for a GPU (engine/arg_utils.py
    _set_default_args_v1, 0.8.5–0.11.0): cards of 70 GiB or more that are not A100s get the large
    values; the OpenAI server uses the smaller token budget of each pair."""
    large = total_bytes >= 70 * GIB and "a100" not in gpu_name.lower()
    if large:
        return (8192 if api_server else 16384), 1024
    return (2048 if api_server else 8192), 256


# --- SGLang ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SglangRules:
    """How one SGLang release picks mem_fraction_static and shrinks it for multimodal models."""

    version: Version
    # "tp_table": 0.88 for TP 1 on cards up to 80 GiB, less for larger TP (server_args.py, 0.4.6–0.4.7).
    # "reserve_table": (gpu_mem - reserved) / gpu_mem with reserved by card class (0.4.8–0.5.2).
    # "chunk_and_graphs": reserved = 512 MiB + 1.5 MiB × chunk + 2 MiB × cuda_graph_max_bs (0.5.3 on).
    default_formula: str
    # How a multimodal model's fraction is shrunk (read in each wheel, 2026-12-01):
    # "model_runner_0_9": ModelRunner multiplies every fraction, the user's too, by 0.90 and logs
    #   "Automatically reduce --mem-fraction-static to X because this is a multimodal model"
    #   (model_runner.py, 0.4.6–0.4.8);
    # "default_0_9": server_args.py multiplies only its own default by 0.90 (0.4.9–0.4.9.post2);
    # "vit_scaled_default": server_args.adjust_mem_fraction_for_vlm scales only the default by the
    #   ViT's size and logs "Multimodal model: Dynamically adjusted --mem-fraction-static" (0.4.9.post3 on).
    vlm_reduction: str

    @property
    def label(self) -> str:
        return f"SGLang {version_text(self.version)}"


def sglang_rules(version: str) -> SglangRules:
    v = parse_version(version)
    if v < (0, 4, 8):
        formula = "tp_table"
    elif v < (0, 5, 3):
        formula = "reserve_table"
    else:
        formula = "chunk_and_graphs"
    if v < (0, 4, 9):
        reduction = "model_runner_0_9"
    elif v[:3] == (0, 4, 9) and post_release(version) < 3:
        reduction = "default_0_9"
    else:
        reduction = "vit_scaled_default"
    return SglangRules(version=v, default_formula=formula, vlm_reduction=reduction)
