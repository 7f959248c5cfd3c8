"""Child processes of `make gpu`: how the CLI is called, and how a step's whole tree is ended.

A step that runs out of time is killed with everything under it — servers and workers included,
even those in sessions of their own — so nothing keeps a GPU (or this machine's cores) afterwards.
"""

from __future__ import annotations

import os
import signal
import sys

from mineru_fit.monitor.procs import all_parents, descendants


def cli(*args: str) -> list[str]:
    """`mineru-fit ARGS` where no console script is installed: the package from PYTHONPATH."""
    return [sys.executable, "-m", "mineru_fit", *args]


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> int:
    """Signal `pid` and every process under it (read before any dies: orphans move to init);
    this process itself is spared (`kill_tree(os.getpid())` ends only its children).
    Returns how many were signalled."""
    tree = descendants(pid, all_parents()) - {os.getpid()}
    count = 0
    for target in sorted(tree, reverse=True):
        try:
            os.kill(target, sig)
            count += 1
        except (ProcessLookupError, PermissionError):
            pass
    return count
