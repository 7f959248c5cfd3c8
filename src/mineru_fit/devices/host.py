"""The host's own memory: the budget when there is no GPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def available_ram_bytes(meminfo: Path = Path("/proc/meminfo")) -> Optional[int]:
    """MemAvailable (what can be used without swapping), else total RAM, else None."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
