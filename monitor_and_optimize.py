#!/usr/bin/env python3
"""The guide's `python monitor_and_optimize.py`: the same as `mineru-fit monitor` (arguments forwarded).

GPUtil is not needed: NVML through nvidia-ml-py replaces it. `python monitor_and_optimize.py
--once --json` prints one snapshot; `watch -- CMD` measures a command's peak memory per phase.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import mineru_fit  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))


def main() -> None:
    from mineru_fit.cli import main as cli_main

    sys.argv = [sys.argv[0], "monitor", *sys.argv[1:]]
    cli_main()


if __name__ == "__main__":
    main()
