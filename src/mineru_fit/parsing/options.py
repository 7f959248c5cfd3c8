"""What a parse is asked to do: where outputs go, which pages, and how to reach the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from mineru_fit.parsing.pagesel import PageSelection
from mineru_fit.planner.plan import Plan

DEFAULT_DPI = 200  # MinerU renders PDF pages at 200 DPI


@dataclass(frozen=True)
class ParseOptions:
    out_dir: Path
    pages: Optional[PageSelection] = None   # None: every page
    password: Optional[str] = None          # for encrypted PDFs
    dpi: int = DEFAULT_DPI                  # PDF rendering for the vlm tier
    force: bool = False                     # ignore checkpoints and redo every page


@dataclass(frozen=True)
class VlmSetup:
    """How the vlm tier reaches MinerU2.5: a server URL, or the built-in engine in this process."""

    server_url: Optional[str] = None
    model_dir: Optional[Path] = None             # in-process: the model folder
    levels: tuple[Plan, ...] = ()                # in-process: the chosen builtin plan, then the levels below it
    device: Optional[str] = None                 # in-process: cuda:N / cpu override of the plan's device
    max_new_tokens: Optional[int] = None         # a lower output cap than the plan's (never higher)
    concurrency: Optional[int] = None            # server: pages in flight (default 8)
    max_model_len: Optional[int] = None          # server: its context, when /v1/models does not say
    device_mode: Optional[str] = None            # which GPU to read memory from (NVML)
    model_name: str = ""                         # what the checkpoints record as the model
    faults: Optional[Callable[[str], Any]] = None  # tests: level -> OOM injection for the in-process engine

    @property
    def in_process(self) -> bool:
        return self.server_url is None
