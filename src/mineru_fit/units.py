"""Byte units. Bytes are ints internally; humans see GiB/MiB with one decimal."""

from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3
GB = 10**9


def gib(n_bytes: float) -> str:
    """Format bytes as GiB with one decimal ('2.2 GiB')."""
    return f"{n_bytes / GIB:.1f} GiB"


def mib(n_bytes: float) -> str:
    """Format bytes as MiB with one decimal ('512.0 MiB')."""
    return f"{n_bytes / MIB:.1f} MiB"


def human(n_bytes: float) -> str:
    """GiB at or above 1 GiB, MiB below: what a person wants to read in a table."""
    return gib(n_bytes) if abs(n_bytes) >= GIB else mib(n_bytes)


def gib_to_bytes(value_gib: float) -> int:
    return int(round(value_gib * GIB))
