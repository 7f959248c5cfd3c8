"""vLLM: how it is launched, MinerU's logits processor, and how its startup log reads.

Log lines (vLLM V1: v1/worker/gpu_model_runner.py, v1/worker/gpu_worker.py,
v1/core/kv_cache_utils.py; formats as public vLLM logs print them):

  Model loading took 2.1600 GiB and 3.213 seconds           (0.10–0.11: "%.4f GiB and %.6f seconds")
  Model loading took 55.22 GiB memory and 20.3s             (newer)
  Available KV cache memory: 1.50 GiB
  GPU KV cache size: 49,152 tokens
  Maximum concurrency for 8,192 tokens per request: 6.00x
  Graph capturing finished in 8 secs, took 0.31 GiB
  Application startup complete.
  ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` ...
  ValueError: To serve at least one request with the models's max seq len (32768), (5.0 GiB KV cache
      is needed, which is larger than the available KV cache memory (0.53 GiB). ...
  ValueError: Free memory on device (6.9/8.0 GiB) on startup is less than desired GPU memory
      utilization (0.9, 7.2 GiB). ...

MinerU's vLLM wrapper (mineru/model/vlm/vllm_server.py) adds `--logits-processors
mineru_vl_utils:MinerULogitsProcessor` when enable_custom_logits_processors() allows it: vLLM
0.10.1 or newer, VLLM_USE_V1 not 0, and compute capability 8.0+ unless vLLM is 0.10.2 or newer.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Mapping, Optional, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

from mineru_fit.engines.flags import FlagTable
from mineru_fit.engines.startlog import FailurePattern, LinePattern, count_value, gib_value
from mineru_fit.planner.plan import Plan

ENGINE = "vllm"
PLAN_LAUNCHER = ("vllm", "serve")
EXECUTABLE_VARIABLE = "MINERU_FIT_VLLM_EXECUTABLE"
EXTRA = "vllm"
LOGITS_PROCESSOR = "mineru_vl_utils:MinerULogitsProcessor"


def default_launcher() -> list[str]:
    # The `vllm` script beside this python, so an unactivated venv still finds it.
    script = Path(sys.executable).parent / "vllm"
    return [str(script) if script.exists() else "vllm", "serve"]


@dataclass(frozen=True)
class VlUtils:
    """What the installed mineru-vl-utils offers vLLM."""

    version: str
    exports_processor: bool          # MinerULogitsProcessor in its public names
    vllm_requirement: Optional[str]  # its `vllm` extra, e.g. "vllm<0.29.0,>=0.19.1"


def find_vl_utils() -> Optional[VlUtils]:
    """mineru-vl-utils as installed, read from its metadata and __all__ (imports no torch or vLLM)."""
    try:
        version = metadata.version("mineru-vl-utils")
    except metadata.PackageNotFoundError:
        return None
    requirement = None
    for text in metadata.requires("mineru-vl-utils") or ():
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.name == "vllm" and req.marker is not None and req.marker.evaluate({"extra": "vllm"}):
            requirement = f"vllm{req.specifier}"
    try:
        import mineru_vl_utils

        exports = "MinerULogitsProcessor" in getattr(mineru_vl_utils, "__all__", ())
    except ImportError:  # pragma: no cover - a broken install
        exports = False
    return VlUtils(version=version, exports_processor=exports, vllm_requirement=requirement)


def logits_processor_decision(vllm_version: str, table: FlagTable, vl_utils: Optional[VlUtils],
                              compute_capability: Optional[tuple[int, int]],
                              environ: Mapping[str, str]) -> tuple[bool, str]:
    """Whether to pass MinerU's no-repeat-ngram processor, and why (MinerU's own rules, plus ours)."""
    if vl_utils is None or not vl_utils.exports_processor:
        return False, ("MinerU's no-repeat-ngram logits processor is off: mineru-vl-utils with MinerULogitsProcessor "
                       "is not installed (pip install 'mineru-fit[engine]')")
    if "--logits-processors" not in table.flags:
        return False, f"vLLM {table.version} takes no --logits-processors: MinerU's no-repeat-ngram processor is off"
    if environ.get("VLLM_USE_V1", "1").strip() == "0":
        return False, "VLLM_USE_V1=0: MinerU's logits processor needs the V1 engine, so it is off"
    version = Version(vllm_version.split("+")[0])
    if version < Version("0.10.1"):
        return False, f"vLLM {vllm_version} is older than 0.10.1: MinerU's logits processor is off"
    if compute_capability is not None and compute_capability < (8, 0) and version < Version("0.10.2"):
        return False, "compute capability below 8.0 needs vLLM 0.10.2+ for custom logits processors: off"
    if vl_utils.vllm_requirement:
        try:
            wanted = Requirement(vl_utils.vllm_requirement).specifier
        except InvalidRequirement:
            wanted = None
        if wanted is not None and not wanted.contains(version, prereleases=True):
            return False, (f"mineru-vl-utils {vl_utils.version}'s logits processor needs {vl_utils.vllm_requirement}, "
                           f"not vLLM {vllm_version}: it is off")
    return True, f"MinerU's no-repeat-ngram logits processor on ({LOGITS_PROCESSOR})"


def adapt(args: Sequence[str], table: FlagTable, plan: Plan, *, vllm_version: Optional[str] = None,
          vl_utils: Optional[VlUtils] = None,
          environ: Optional[Mapping[str, str]] = None) -> tuple[list[str], dict[str, str], list[str]]:
    """What this vLLM version needs beyond the plan's argv: (args, extra env, notes)."""
    out = list(args)
    on, why = logits_processor_decision(
        vllm_version or table.version, table, vl_utils,
        tuple(plan.device.compute_capability) if plan.device.compute_capability else None,
        os.environ if environ is None else environ,
    )
    if on and "--logits-processors" not in out:
        out += ["--logits-processors", LOGITS_PROCESSOR]
    return out, {}, [why]


_F = r"(-?[\d.]+)"
STARTUP_PATTERNS: tuple[LinePattern, ...] = (
    LinePattern("weights", re.compile(r"Model loading took " + _F + r" ?GiB"),
                lambda m: {"weights_bytes": gib_value(m.group(1))}),
    LinePattern("kv_cache", re.compile(r"Available KV cache memory: " + _F + r" GiB"),
                lambda m: {"kv_cache_bytes": gib_value(m.group(1))}),
    LinePattern("kv_tokens", re.compile(r"GPU KV cache size: ([\d,]+) tokens"),
                lambda m: {"kv_cache_tokens": count_value(m.group(1))}),
    LinePattern("concurrency", re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"),
                lambda m: {"context_length": count_value(m.group(1)), "max_concurrency": float(m.group(2))}),
    LinePattern("cuda_graphs", re.compile(r"Graph capturing finished in \d+ secs?, took " + _F + r" GiB"),
                lambda m: {"cuda_graph_bytes": gib_value(m.group(1))}),
)

READY_MARKERS = ("Application startup complete.",)

FAILURE_PATTERNS: tuple[FailurePattern, ...] = (
    FailurePattern("oom", re.compile(r"torch\.(?:cuda\.)?OutOfMemoryError|CUDA out of memory|CUDA error: out of memory")),
    FailurePattern("kv_cache", re.compile(
        r"No available memory for the cache blocks"
        r"|KV cache is needed, which is larger than the available KV cache memory"
        r"|larger than the maximum number of tokens that can be stored in KV cache"
        r"|[Ii]nsufficient memory")),
    # The V1 startup check: less is free than --gpu-memory-utilization asks for.
    FailurePattern("gpu_busy", re.compile(r"Free memory on device .* is less than desired GPU memory utilization")),
    FailurePattern("port_in_use", re.compile(r"[Aa]ddress already in use")),
    # argparse: a pass-through flag this version does not know.
    FailurePattern("usage", re.compile(r"error: unrecognized arguments|error: argument --")),
)
