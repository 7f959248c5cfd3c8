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


# Everything only an extra installs: a base install (`pip install mineru-fit`) has none of it.
EXTRAS_ONLY = ("PIL", "docvortex", "pypdfium2", "reportlab", "fastapi", "starlette", "uvicorn", "multipart",
               "gradio", "torch", "transformers", "accelerate", "bitsandbytes", "mineru_vl_utils", "rapidfuzz",
               "ray", "mineru", "fastapi_offline")

_BASE_ONLY = """
import importlib.abc, runpy, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Missing())
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def run_base_only(*argv: str) -> subprocess.CompletedProcess:
    code = _BASE_ONLY.format(blocked=EXTRAS_ONLY, argv=["mineru-fit", *argv], script=str(MINERU_FIT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_base_install_runs_help_plan_doctor_and_devices() -> None:
    for argv in (["--help"], ["parse", "--help"], ["plan", "--vram", "8"], ["doctor"], ["devices"]):
        done = run_base_only(*argv)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, argv
