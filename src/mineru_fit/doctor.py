"""What is installed, what the GPU is, which settings are in effect, and which of them hurt.

The rules are pure functions of values (environment, versions, inventory) so each can be
tested; `collect()` is the one place that reads the machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Mapping, Optional

from mineru_fit import __version__
from mineru_fit.devices.types import Inventory
from mineru_fit.settings import DEFAULT_ALLOC_CONF
from mineru_fit.units import gib

PACKAGES: dict[str, str] = {
    # distribution name -> the extra that installs it
    "torch": "engine",
    "transformers": "engine",
    "accelerate": "engine",
    "bitsandbytes": "engine",
    "mineru-vl-utils": "engine",
    "nvidia-ml-py": "base",
    "huggingface-hub": "base",
    "docvortex": "flash",
    "gradio": "ui",
    "sglang": "sglang",
    "vllm": "vllm",
    "modelscope": "modelscope",
}
ENV_VARS = (
    "MINERU_VIRTUAL_VRAM_SIZE", "MINERU_DEVICE_MODE", "PYTORCH_CUDA_ALLOC_CONF", "MINERU_MODEL_SOURCE",
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_LAUNCH_BLOCKING", "PYTORCH_NO_CUDA_MEMORY_CACHING",
    "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HOME", "MINERU_FIT_CONFIG",
)


@dataclass(frozen=True)
class Finding:
    severity: str  # ok | info | warn | error
    topic: str
    message: str


@dataclass
class DoctorReport:
    mineru_fit: str
    python: str
    platform: str
    packages: dict[str, Optional[str]]
    torch_runtime: dict[str, object]
    inventory: dict[str, object]
    env: dict[str, str]
    model: dict[str, object]
    findings: list[Finding] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def _alloc_conf_items(value: str) -> dict[str, str]:
    items: dict[str, str] = {}
    for part in value.split(","):
        if part.strip():
            key, _, val = part.partition(":")
            items[key.strip()] = val.strip()
    return items


LAUNCH_BLOCKING_MESSAGE = (
    "every CUDA kernel launch waits for the GPU to finish it: a large slowdown meant for debugging "
    "(it saves no memory) — unset it"
)


def alloc_conf_explanation(value: str) -> str:
    """What the user's PYTORCH_CUDA_ALLOC_CONF does, beside the default mineru-fit would set."""
    items = _alloc_conf_items(value)
    parts = []
    split = items.get("max_split_size_mb")
    if split is not None:
        parts.append(f"max_split_size_mb:{split} keeps cached blocks above {split} MB whole (never split), "
                     "which limits fragmentation by large blocks")
    if "expandable_segments" in items:
        parts.append(f"expandable_segments:{items['expandable_segments']} "
                     + ("grows segments in place" if items["expandable_segments"].lower() == "true"
                        else "keeps fixed-size segments"))
    what = "; ".join(parts) or "allocator settings of your own"
    return (f"{value} is yours and every engine gets it as given ({what}); unset, mineru-fit gives the built-in "
            f"engine {DEFAULT_ALLOC_CONF}, which grows segments so images of varying size reuse memory")


def env_findings(environ: Mapping[str, str]) -> list[Finding]:
    """Settings known to hurt speed or memory, each with what to do instead."""
    found: list[Finding] = []
    if environ.get("CUDA_LAUNCH_BLOCKING", "").strip().lower() in {"1", "true", "yes"}:
        found.append(Finding("warn", "CUDA_LAUNCH_BLOCKING", LAUNCH_BLOCKING_MESSAGE))
    alloc = environ.get("PYTORCH_CUDA_ALLOC_CONF")
    if alloc:
        items = _alloc_conf_items(alloc)
        found.append(Finding("info", "PYTORCH_CUDA_ALLOC_CONF", alloc_conf_explanation(alloc)))
        if items.get("expandable_segments", "").lower() == "false":
            found.append(Finding("info", "PYTORCH_CUDA_ALLOC_CONF",
                                 "expandable_segments:False: variable image sizes fragment the cache — "
                                 "expandable_segments:True avoids that"))
    else:
        found.append(Finding("info", "PYTORCH_CUDA_ALLOC_CONF",
                             f"unset: the built-in engine sets {DEFAULT_ALLOC_CONF} for its process"))
    if environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING", "").strip() in {"1", "true"}:
        found.append(Finding("warn", "PYTORCH_NO_CUDA_MEMORY_CACHING",
                             "the caching allocator is off: every tensor is a cudaMalloc, which is slow — unset it"))
    if environ.get("CUDA_VISIBLE_DEVICES") == "":
        found.append(Finding("warn", "CUDA_VISIBLE_DEVICES", "set but empty: it hides every GPU — unset it or list GPUs"))
    return found


def package_findings(versions: Mapping[str, Optional[str]]) -> list[Finding]:
    found: list[Finding] = []
    torch = versions.get("torch")
    if versions.get("torchvision") and torch and "+cpu" in torch:
        found.append(Finding("error", "torchvision",
                             "torchvision beside a CPU torch fails to import ('operator torchvision::nms does not "
                             "exist') and breaks transformers' Qwen2-VL — pip uninstall torchvision"))
    if torch is None:
        found.append(Finding("info", "engine", "torch is not installed: planning and monitoring work; to run the "
                                               "built-in engine pip install 'mineru-fit[engine]'"))
    return found


def gpu_findings(inventory: Inventory, virtual_vram_gib: Optional[float]) -> list[Finding]:
    found: list[Finding] = []
    if not inventory.has_gpu:
        found.append(Finding("info", "gpu", f"no CUDA GPU found ({inventory.reason}): the built-in engine runs on "
                                            "the CPU and the flash tier needs no GPU"))
        return found
    for gpu in inventory.gpus:
        held = gpu.memory.used_bytes
        if held > 0.25 * gpu.memory.total_bytes:
            found.append(Finding("info", f"gpu {gpu.index}",
                                 f"{gib(held)} of {gib(gpu.memory.total_bytes)} is already in use: plans use the "
                                 f"{gib(gpu.memory.free_bytes)} that is free"))
        if virtual_vram_gib and virtual_vram_gib * 2**30 > gpu.memory.total_bytes:
            found.append(Finding("warn", "MINERU_VIRTUAL_VRAM_SIZE",
                                 f"{virtual_vram_gib:g} GiB is more than GPU {gpu.index} has "
                                 f"({gib(gpu.memory.total_bytes)}) — set it at or below the card's memory"))
    return found


def installed_versions() -> dict[str, Optional[str]]:
    versions: dict[str, Optional[str]] = {}
    for name in [*PACKAGES, "torchvision"]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


_TORCH_PROBE = (
    "import json, torch; c = torch.cuda.is_available();"
    "print(json.dumps({'cuda_build': torch.version.cuda, 'cuda_available': c,"
    " 'device_count': torch.cuda.device_count() if c else 0,"
    " 'mps_available': bool(getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available())}))"
)


def torch_runtime(timeout_s: float = 120.0) -> dict[str, object]:
    """Ask torch in a child process: a broken install (torchvision!) cannot take the doctor down."""
    try:
        done = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"importing torch took more than {timeout_s:g} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        return {"error": f"importing torch failed: {last}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def collect(settings_error: Optional[str] = None, device_mode: Optional[str] = None,
            model: str = "", models_dir: Optional[Path] = None, virtual_vram_gib: Optional[float] = None,
            simulate: Optional[Path] = None) -> DoctorReport:
    """Read the machine once and apply every rule."""
    from mineru_fit.devices import read_inventory
    from mineru_fit.models import find_known, where

    versions = installed_versions()
    runtime = torch_runtime() if versions.get("torch") else {}
    findings: list[Finding] = []
    if settings_error:
        findings.append(Finding("error", "settings", settings_error))
    findings += package_findings(versions)
    if "error" in runtime:
        findings.append(Finding("error", "torch", str(runtime["error"])))
    inventory = read_inventory(device_mode, simulate=simulate)
    findings += gpu_findings(inventory, virtual_vram_gib)
    findings += env_findings(os.environ)
    env = {k: os.environ[k] for k in ENV_VARS if k in os.environ}
    env.update({k: ("***" if "TOKEN" in k else v) for k, v in os.environ.items() if k.startswith("MINERU_FIT_")})
    path = where(model, models_dir=models_dir) if model else None
    known = find_known(model) if model else None
    model_info: dict[str, object] = {"id": model, "path": str(path) if path else None}
    if path is None:
        shipped = " (planning uses the shipped spec)" if known else ""
        findings.append(Finding("info", "model", f"{model} is not downloaded{shipped} — mineru-fit models download"))
    return DoctorReport(
        mineru_fit=__version__,
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        packages=versions,
        torch_runtime=runtime,
        inventory=inventory.to_dict(),
        env=env,
        model=model_info,
        findings=findings,
    )
