"""Reading an engine's startup log: the memory it reports, and why it failed. Pure.

The patterns themselves live with each engine (sglang.py, vllm.py), with their sources.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable, Optional, Sequence

from mineru_fit.units import GIB

# A pattern fills fields of StartupMemory from one log line's match groups.
Extractor = Callable[[re.Match[str]], dict[str, float]]


@dataclass(frozen=True)
class LinePattern:
    """One log line an engine prints at startup, and what it tells (values in GiB or counts)."""

    name: str
    regex: re.Pattern[str]
    extract: Extractor


@dataclass(frozen=True)
class FailurePattern:
    kind: str          # oom | kv_cache | gpu_busy | port_in_use | usage
    regex: re.Pattern[str]


@dataclass(frozen=True)
class StartupMemory:
    """What the engine said about its memory while starting (per GPU). None: not reported."""

    weights_bytes: Optional[int] = None
    kv_cache_bytes: Optional[int] = None
    kv_cache_tokens: Optional[int] = None
    cuda_graph_bytes: Optional[int] = None
    free_after_start_bytes: Optional[int] = None
    max_running_requests: Optional[int] = None
    context_length: Optional[int] = None
    max_concurrency: Optional[float] = None
    ready: bool = False
    lines: tuple[str, ...] = ()   # the log lines these numbers came from

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def weights_loaded(self) -> bool:
        return self.weights_bytes is not None


_BYTES_FIELDS = {"weights_bytes", "kv_cache_bytes", "cuda_graph_bytes", "free_after_start_bytes"}
_INT_FIELDS = {"kv_cache_tokens", "max_running_requests", "context_length"}


def gib_value(text: str) -> float:
    return float(text.replace(",", ""))


def count_value(text: str) -> float:
    return float(text.replace(",", ""))


def parse_startup(lines: Iterable[str], patterns: Sequence[LinePattern],
                  ready_markers: Sequence[str] = ()) -> StartupMemory:
    """The first report of each figure wins (with tensor parallelism every rank logs its own)."""
    memory = StartupMemory()
    seen: list[str] = []
    for line in lines:
        if any(marker in line for marker in ready_markers):
            memory = replace(memory, ready=True)
        for pattern in patterns:
            match = pattern.regex.search(line)
            if match is None:
                continue
            updates = {}
            for key, value in pattern.extract(match).items():
                if getattr(memory, key) is not None:
                    continue
                if key in _BYTES_FIELDS:
                    updates[key] = int(round(value * GIB))
                elif key in _INT_FIELDS:
                    updates[key] = int(value)
                else:
                    updates[key] = value
            if updates:
                memory = replace(memory, **updates)
                seen.append(line.strip())
    return replace(memory, lines=tuple(seen))


@dataclass(frozen=True)
class Failure:
    kind: str       # oom | kv_cache | gpu_busy | port_in_use | usage | load | crash | timeout
    line: str       # the log line that tells, or a summary

    @property
    def memory(self) -> bool:
        """A failure that a more aggressive level (less memory) can cure."""
        return self.kind in ("oom", "kv_cache", "gpu_busy", "load")


def classify_failure(lines: Sequence[str], patterns: Sequence[FailurePattern], *,
                     weights_loaded: bool, returncode: Optional[int]) -> Failure:
    """Why an engine stopped: the last matching error line wins (it is closest to the exit)."""
    found: Optional[Failure] = None
    for line in lines:
        for pattern in patterns:
            if pattern.regex.search(line):
                found = Failure(pattern.kind, line.strip())
    if found is not None:
        return found
    last = _last_error_line(lines) or f"exit code {returncode}"
    # Before the weights are in, a failure is a load failure (a format or kernel the GPU lacks,
    # or memory the engine did not name); a lighter level may load where this one did not.
    return Failure("load" if not weights_loaded else "crash", last)


def _last_error_line(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        text = line.strip()
        if text and ("Error" in text or "error" in text or "Exception" in text):
            return text
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return ""
