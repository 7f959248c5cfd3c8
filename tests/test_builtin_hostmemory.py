"""On the CPU the engine's memory is RSS: once the model is loaded, what the process freed before
(the loader's bf16 → fp32 copies, in real use) goes back to the system (engines/builtin/hostmemory.py)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fixtures.tiny_qwen2vl import build_tiny_qwen2vl  # noqa: E402

# Leaves 380 MiB freed but held in the heap (as loading leaves its copies), then loads the engine.
SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch

    def rss_mib():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) >> 10

    from mineru_fit.engines.builtin.loader import load_model
    from mineru_fit.engines.builtin.options import BuiltinOptions
    options = BuiltinOptions(model=sys.argv[1], device="cpu", dtype="float32", max_model_len=256,
                             max_new_tokens=4, max_image_pixels=64 * 28 * 28)
    if sys.argv[2] == "load":
        load_model(options)   # once first: what importing and loading hold is not the point here
    x = torch.ones(30 << 18)   # 30 MiB, mapped and freed: glibc's threshold rises to it
    del x
    before = rss_mib()
    held = [torch.ones(20 << 18) for _ in range(20)]   # 20 tensors of 20 MiB, from the heap
    last = held[-1]
    del held
    freed_but_held = rss_mib() - before
    if sys.argv[2] == "load":
        load_model(options)
    print(freed_but_held, rss_mib() - before)
""")


def rss_growth(*args: str) -> tuple[int, int]:
    """(MiB held after freeing 19 of 20 tensors, MiB held at the end)."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first, last = done.stdout.strip().splitlines()[-1].split()
    return int(first), int(last)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's allocator behaviour; other C libraries are left alone")
def test_loading_the_engine_on_the_cpu_gives_freed_memory_back(tmp_path: Path) -> None:
    model = str(build_tiny_qwen2vl(tmp_path / "tiny"))
    # Without the engine, the process keeps what it freed (19 × 20 MiB) ...
    held, still = rss_growth(model, "plain")
    assert held >= 300 and still >= 300
    # ... once the engine has loaded on the CPU, only the tensor alive (20 MiB) and a second tiny model remain.
    held, after_load = rss_growth(model, "load")
    assert held >= 300 and after_load <= 60
