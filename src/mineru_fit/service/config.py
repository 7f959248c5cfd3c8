"""What the parse service is started with: where jobs live, how many run at once, what it accepts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mineru_fit.runrecords import state_dir
from mineru_fit.units import MIB


def default_data_dir() -> Path:
    """Jobs (their database, uploads and outputs) live under the state dir unless --data-dir says otherwise."""
    return state_dir() / "service"


@dataclass(frozen=True)
class Limits:
    """What one request may hold; each has a flag on `mineru-fit start api`."""

    max_upload_bytes: int = 200 * MIB      # all files of one request together (MinerU's cloud API allows 200 MB)
    max_pages: int = 1000                  # pages to parse in one job, after the page range
    max_files: int = 100                   # files in one job


@dataclass(frozen=True)
class EngineInfo:
    """Where the vlm tier's engine is, as jobs need it (None url: flash only)."""

    url: Optional[str] = None
    kind: str = "none"                     # none | server | builtin | sglang | vllm
    level: Optional[str] = None
    reason: str = "no engine"
    max_model_len: Optional[int] = None
    concurrency: Optional[int] = None      # requests the engine was planned to run at once
    model_name: str = ""


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    workers: int = 8                       # jobs parsed at once: the plan's concurrency
    max_queue: int = 256                   # jobs waiting beyond the workers; more are refused with 503 + Retry-After
    limits: Limits = Limits()
    token: Optional[str] = None            # bearer token; None: no authentication
    job_timeout_s: float = 3600.0          # a job running longer is stopped and reported
    retention_s: float = 7 * 24 * 3600.0   # finished jobs older than this are deleted (0: keep forever)
    engine: EngineInfo = EngineInfo()
    device_mode: Optional[str] = None      # which GPUs the memory panel reads
    jobs_per_runner: int = 200             # a worker process is replaced after this many jobs (no slow leaks)
    allowed_hosts: Optional[tuple[str, ...]] = None  # Host header names served (None: any); the CLI sets
    #                                        localhost names + the bind address (DNS rebinding)
    body_timeout_s: float = 30.0           # a request body that sends nothing for this long is answered 408
    store_retry_s: float = 2.0             # while the data dir cannot be written: how often to try again

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must not be negative")
        if self.body_timeout_s <= 0:
            raise ValueError("body_timeout_s must be positive")
