"""What a `parse --ray` run asks of the cluster: plain values the driver ships to every actor and task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mineru_fit.planner.inputs import PlanRequest

ENGINES = ("builtin", "sglang", "vllm")


@dataclass(frozen=True)
class RayJob:
    """How to reach the cluster and how each engine actor plans for its own GPU."""

    address: str = "auto"                  # auto | local | ray://host:10001 | host:6379
    tier: str = "auto"                     # auto | vlm | flash (as `parse --tier`)
    model_id: str = "opendatalab/MinerU2.5-2509-1.2B"
    model_dir: Optional[Path] = None       # the model folder as the driver sees it (each node checks its own)
    request: PlanRequest = PlanRequest()   # the guide's flags; each actor plans them for its GPU
    engine: str = "builtin"                # builtin: in each actor's process; sglang/vllm: a server each actor supervises
    server_url: Optional[str] = None       # --server: every page goes to this endpoint, no engine is started
    max_new_tokens: Optional[int] = None   # a lower output cap than each plan's
    batch_pages: int = 16                  # pages handed to an actor at a time (its plan decides how many run at once)
    flash_chunk_pages: Optional[int] = None  # pages of one PDF per flash task (None: its share of the CPUs)


@dataclass(frozen=True)
class ActorJob:
    """What one engine actor needs: the job and the registry to report to."""

    job: RayJob
    registry: str                          # the registry actor's name in this run's namespace
