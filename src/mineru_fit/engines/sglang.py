"""SGLang: how it is launched, what its version needs added, and how its startup log reads.

Log lines (SGLang 0.5.x, python/sglang/srt/model_executor/model_runner.py and
mem_cache/memory_pool.py; the formats below are as public SGLang logs print them). SGLang's
"GB" is bytes / 2**30 (get_available_gpu_memory), so it is read as GiB:

  Load weight end. elapsed=23.18 s, type=..., avail mem=32.02 GB, mem usage=28.79 GB.
  Load weight end. type=Qwen2ForCausalLM, dtype=torch.bfloat16, avail mem=15.61 GB, mem usage=... GB.
  KV Cache is allocated. #tokens: 350257, K size: 0.21 GB, V size: 0.21 GB
  KV Cache is allocated. #tokens: 383872, KV size: 19.36 GB
  Capture cuda graph end. Time elapsed: 17.13 s. mem usage=0.89 GB. avail mem=10.26 GB.
  Capture target decode CUDA graph end. elapsed=25.74 s, mem usage=2.66 GB, avail mem=24.45 GB.   (newer)
  max_total_num_tokens=903439, chunked_prefill_size=8192, max_prefill_tokens=16384,
      max_running_requests=3529, context_len=131072, available_gpu_mem=10.26 GB
  The server is fired up and ready to roll!
  RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. Current value: ...
"""

from __future__ import annotations

import re
import sys
from typing import Sequence

from mineru_fit.engines.flags import FlagTable
from mineru_fit.engines.startlog import FailurePattern, LinePattern, count_value, gib_value
from mineru_fit.planner.plan import Plan

ENGINE = "sglang"
# How planner/commands.py starts an SGLang argv; replaced by the real launcher at start.
PLAN_LAUNCHER = ("python", "-m", "sglang.launch_server")
EXECUTABLE_VARIABLE = "MINERU_FIT_SGLANG_EXECUTABLE"
EXTRA = "sglang"


def default_launcher() -> list[str]:
    # The python running mineru-fit is the one SGLang was installed into (mineru-fit[sglang]).
    return [sys.executable, "-m", "sglang.launch_server"]


def adapt(args: Sequence[str], table: FlagTable, plan: Plan) -> tuple[list[str], dict[str, str], list[str]]:
    """What this SGLang version needs beyond the plan's argv: (args, extra env, notes)."""
    out = list(args)
    notes: list[str] = []
    if "--disable-cuda-graph" in out and "--disable-piecewise-cuda-graph" in table.flags:
        # Newer SGLang also captures piecewise graphs for prefill by default; a plan without
        # CUDA graphs counted none, so those are turned off too.
        out.append("--disable-piecewise-cuda-graph")
        notes.append(f"SGLang {table.version} captures piecewise CUDA graphs by default: turned off with the rest")
    if "SGLANG_IMAGE_MAX_PIXELS" not in table.env:
        notes.append(f"SGLang {table.version} ignores SGLANG_IMAGE_MAX_PIXELS: images may exceed the plan's pixel cap")
    return out, {}, notes


_F = r"([\d.]+)"
STARTUP_PATTERNS: tuple[LinePattern, ...] = (
    LinePattern("weights", re.compile(r"Load weight end\..*?mem usage=" + _F + r" GB"),
                lambda m: {"weights_bytes": gib_value(m.group(1))}),
    LinePattern("kv_cache", re.compile(r"KV Cache is allocated\..*?#tokens: (\d+), K size: " + _F
                                       + r" GB, V size: " + _F + r" GB"),
                lambda m: {"kv_cache_tokens": count_value(m.group(1)),
                           "kv_cache_bytes": gib_value(m.group(2)) + gib_value(m.group(3))}),
    LinePattern("kv_cache", re.compile(r"KV Cache is allocated\..*?#tokens: (\d+), KV size: " + _F + r" GB"),
                lambda m: {"kv_cache_tokens": count_value(m.group(1)), "kv_cache_bytes": gib_value(m.group(2))}),
    LinePattern("cuda_graphs", re.compile(r"Capture (?:target decode )?cuda graph end\..*?mem usage=" + _F + r" GB",
                                          re.IGNORECASE),
                lambda m: {"cuda_graph_bytes": gib_value(m.group(1))}),
    LinePattern("summary", re.compile(r"max_total_num_tokens=(\d+),.*?max_running_requests=(\d+),"
                                      r".*?context_len=(\d+),.*?available_gpu_mem=" + _F + r" GB"),
                lambda m: {"kv_cache_tokens": count_value(m.group(1)),
                           "max_running_requests": count_value(m.group(2)),
                           "context_length": count_value(m.group(3)),
                           "free_after_start_bytes": gib_value(m.group(4))}),
)

READY_MARKERS = ("The server is fired up and ready to roll!",)

FAILURE_PATTERNS: tuple[FailurePattern, ...] = (
    FailurePattern("oom", re.compile(r"torch\.(?:cuda\.)?OutOfMemoryError|CUDA out of memory|CUDA error: out of memory")),
    # model_runner.py: raised when the pool left after the weights holds no token.
    FailurePattern("kv_cache", re.compile(r"Not enough memory\. Please try to increase --mem-fraction-static")),
    FailurePattern("port_in_use", re.compile(r"[Aa]ddress already in use")),
    # argparse: a pass-through flag this version does not know.
    FailurePattern("usage", re.compile(r"error: unrecognized arguments|error: argument --")),
)
