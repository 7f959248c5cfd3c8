"""First seconds of `make gpu`: is everything the run needs importable and working here?

Prints one JSON object (versions, the GPU, which bitsandbytes library loaded) and exits 1 with
one line per missing piece, so a machine without a wheel costs seconds, not minutes. On CUDA it
also runs bitsandbytes' 4-bit and 8-bit layers once on the GPU (the sm_90 kernels of the carried
CUDA 13 build must load and compute); a failure there is a warning: only two levels need them.

    python benchmarks/gpu_preflight.py [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import platform
import sys
from pathlib import Path
from typing import Any

# What the make-gpu steps import (the engine server, the CLI, the monitor, the charts).
MODULES = ("torch", "transformers", "accelerate", "bitsandbytes", "pydantic", "pydantic_settings", "fastapi",
           "uvicorn", "starlette", "httpx", "typer", "rich", "prometheus_client", "pynvml", "huggingface_hub",
           "tokenizers", "safetensors", "PIL", "numpy", "matplotlib", "mineru_fit.cli.commands",
           "mineru_fit.engines.builtin.server", "mineru_fit.monitor")
DISTRIBUTIONS = ("torch", "transformers", "accelerate", "bitsandbytes", "pydantic", "fastapi", "uvicorn",
                 "nvidia-ml-py", "huggingface-hub", "numpy")


def bnb_smoke(torch: Any) -> dict[str, Any]:
    """NF4 and int8 linear layers forward once on the GPU (random input, finite output)."""
    import bitsandbytes as bnb

    out: dict[str, Any] = {}
    lib = getattr(getattr(bnb, "cextension", None), "lib", None)
    out["library"] = getattr(getattr(lib, "_lib", None), "_name", None) or repr(lib)[:120]
    x = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16)
    nf4 = bnb.nn.Linear4bit(256, 256, compute_dtype=torch.bfloat16, quant_type="nf4").to("cuda")
    int8 = bnb.nn.Linear8bitLt(256, 256, has_fp16_weights=False).to("cuda")
    out["nf4_finite"] = bool(torch.isfinite(nf4(x)).all())
    out["int8_finite"] = bool(torch.isfinite(int8(x.half())).all())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    problems: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable}
    # On the CPU (the dry run) torch and its kin are left to the steps that use them: each of those
    # imports them anyway, with the same packages hidden, and importing them here costs a CPU 10 s.
    heavy = () if args.device.startswith("cuda") else ("torch", "transformers", "accelerate", "bitsandbytes")
    for name in (m for m in MODULES if m not in heavy):
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing wheel, or one that does not load here
            problems.append(f"cannot import {name}: {type(exc).__name__}: {exc}")
    # The carried wheels against what the machine has: versions there are not on record.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from gpu_wheelhouse import CARRY, requirement_problems

    problems += requirement_problems(CARRY, f"{sys.version_info.major}.{sys.version_info.minor}")
    report["versions"] = {}
    for dist in DISTRIBUTIONS:
        try:
            report["versions"][dist] = md.version(dist)
        except md.PackageNotFoundError:
            report["versions"][dist] = None
    if args.device.startswith("cuda") and not problems:
        import torch

        report["torch_cuda"] = torch.version.cuda
        if not torch.cuda.is_available():
            problems.append("torch sees no CUDA GPU")
        else:
            report["gpu"] = torch.cuda.get_device_name(0)
            report["compute_capability"] = list(torch.cuda.get_device_capability(0))
            # Only the 8- and 4-bit levels need it: a failure here is said, and the other levels still run.
            try:
                report["bitsandbytes"] = bnb_smoke(torch)
                if not (report["bitsandbytes"]["nf4_finite"] and report["bitsandbytes"]["int8_finite"]):
                    warnings.append(f"bitsandbytes gave non-finite output: {report['bitsandbytes']}")
            except Exception as exc:
                warnings.append(f"bitsandbytes on CUDA failed: {type(exc).__name__}: {exc}")
    report["problems"], report["warnings"] = problems, warnings
    print(json.dumps(report))
    for line in problems + [f"warning: {w}" for w in warnings]:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
