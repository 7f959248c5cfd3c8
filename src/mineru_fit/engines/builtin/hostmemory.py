"""Host memory for an engine that runs on the CPU, where the plan is the process's RSS.

PyTorch's CPU tensors come from glibc malloc. glibc maps a large block by itself (and unmaps it on
free) only above its mmap threshold, and that threshold rises to the size of each mapped block
freed, up to 32 MiB; below it, tensors come from the heap, whose freed pages stay with the process.

Two costs follow, measured on the real-size MinerU2.5 architecture in fp32 (2-core CPU, 2026-12-01,
one 1036×1036 layout page, `load_model` then `Generator.prefill`):
- Loading converts bf16 weights to fp32 in transformers' loader threads, whose copies leave free
  pages in malloc's arenas: `give_back_free_memory` returns them once the model is loaded, at no
  cost (53–75 MiB less RSS after loading than a process without it).
- The prefill raises RSS by 794–820 MiB where the plan's activation term is 420 MiB: the heap
  fragments. Fixing the threshold at 1 MiB (every activation mapped alone) brought that to
  428–471 MiB but made the same page 8–25% slower (fresh pages faulted in on every layer), and
  at 32 MiB it changed nothing. The engine keeps glibc's default for speed; the plan counts the
  heap's share on the CPU instead (planner constants: CPU_HEAP_MARGIN_FRACTION).
Other C libraries, and GPU devices (whose tensors are not in malloc), are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional


def _glibc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # malloc_trim and gnu_get_libc_version say it is glibc.
    if not all(hasattr(libc, f) for f in ("malloc_trim", "gnu_get_libc_version")):
        return None
    return libc


def give_back_free_memory() -> bool:
    """Return the free pages of every malloc arena to the system; False where that is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
