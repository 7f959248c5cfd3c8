"""The base install stays light: --help and planning never import torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MINERU_FIT = Path(sys.executable).parent / "mineru-fit"

_CHECK = """
import sys, runpy
sys.argv = {argv!r}
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "gradio", "bitsandbytes") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def heavy_modules(*argv: str) -> str:
    code = _CHECK.format(argv=["mineru-fit", *argv], script=str(MINERU_FIT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    return out.strip().splitlines()[-1]


def test_help_imports_no_torch() -> None:
    assert heavy_modules("--help") == "HEAVY:"


def test_plan_imports_no_torch() -> None:
    assert heavy_modules("plan", "--vram", "8", "--json") == "HEAVY:"
