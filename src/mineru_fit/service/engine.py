"""The engine behind the service's vlm tier: start it (or reuse one a URL names), and stop what was started.

The built-in engine runs in this process, on a loopback port of its own: one copy of the weights
and one batcher for every job (each job's worker process reaches it over HTTP), so the plan's
memory holds however many jobs run. SGLang and vLLM run as child processes under the engines'
supervisor, in a thread, with its step-down on out-of-memory. Without a model there is no
engine and jobs run the flash tier.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from mineru_fit.engines.builtin.options import BuiltinOptions
from mineru_fit.engines.process import healthy
from mineru_fit.engines.supervisor import LevelRun
from mineru_fit.errors import EngineError
from mineru_fit.planner.plan import Plan
from mineru_fit.runrecords import RunRecord, remove_record, write_record
from mineru_fit.service.config import EngineInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """Which engine the service uses, decided by the CLI from the plan (or --server)."""

    kind: str                                  # none | server | builtin | supervised
    reason: str
    server_url: Optional[str] = None           # server: the engine someone else runs
    builtin: Optional[BuiltinOptions] = None   # builtin: what to load
    runs: tuple[LevelRun, ...] = ()            # supervised: the levels to try, in order
    plan: Optional[Plan] = None
    health_timeout_s: float = 900.0

    def info(self, url: Optional[str]) -> EngineInfo:
        plan = self.plan
        kind = self.runs[0].plan.engine if self.kind == "supervised" and self.runs else self.kind
        return EngineInfo(url=url, kind=kind, level=plan.level if plan else None, reason=self.reason,
                          max_model_len=plan.max_model_len if plan else None,
                          concurrency=plan.batch_size if plan else None,
                          model_name=plan.model if plan else (self.builtin.served_model_name or "") if self.builtin else "")


class EngineHandle:
    """Start with `start()` (blocks until the engine answers), end with `stop()`; both are idempotent."""

    def __init__(self, spec: EngineSpec, report: Callable[[str], None] = logger.warning) -> None:
        self.spec = spec
        self.report = report
        self._server: Any = None          # builtin: the uvicorn.Server
        self._thread: Optional[threading.Thread] = None
        self._record: Optional[RunRecord] = None
        self._supervisor: Any = None
        self._error: Optional[BaseException] = None

    def start(self) -> EngineInfo:
        spec = self.spec
        if spec.kind == "none":
            return spec.info(None)
        if spec.kind == "server":
            if not healthy(f"{spec.server_url.rstrip('/')}/health", timeout_s=2.0):  # type: ignore[union-attr]
                self.report(f"note: {spec.server_url} does not answer /health yet; vlm jobs will fail until it does")
            return spec.info(spec.server_url)
        if spec.kind == "builtin":
            return self._start_builtin()
        if spec.kind == "supervised":
            return self._start_supervised()
        raise ValueError(f"unknown engine kind {spec.kind!r}")

    # --- built-in, in this process -----------------------------------------------------------
    def _start_builtin(self) -> EngineInfo:
        import uvicorn

        from mineru_fit.engines.builtin.server import build_state, create_app

        spec, options = self.spec, self.spec.builtin
        assert options is not None
        for key, value in (spec.plan.env.items() if spec.plan else ()):
            os.environ.setdefault(key, value)  # e.g. PYTORCH_CUDA_ALLOC_CONF, before torch starts CUDA
        self.report(f"loading the built-in engine (level {options.level}, {options.device}) in this process")
        state = build_state(options)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # loopback only, and a port nobody else holds
        port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="mineru-fit-builtin-engine", daemon=True)
        self._thread.start()
        url = f"http://127.0.0.1:{port}"
        self._wait_healthy([f"{url}/health"], timeout_s=60.0)
        self._record = RunRecord(engine="builtin", level=options.level, pid=os.getpid(), base_url=url,
                                 metrics_url=f"{url}/metrics", started_at=_now(), argv=list(spec.plan.argv) if spec.plan else [],
                                 plan=spec.plan.model_dump(mode="json") if spec.plan else None)
        write_record(self._record)
        self.report(f"built-in engine up at {url} (level {options.level}, batch {options.max_batch_size})")
        return spec.info(url)

    # --- SGLang / vLLM under the supervisor ----------------------------------------------------
    def _start_supervised(self) -> EngineInfo:
        from mineru_fit.engines.supervisor import Supervisor, SupervisorOptions

        spec = self.spec
        self._supervisor = Supervisor(list(spec.runs), report=self.report,
                                      options=SupervisorOptions(health_timeout_s=spec.health_timeout_s))

        def supervise() -> None:
            try:
                self._supervisor.run()
            except BaseException as exc:  # reported by start() or stop()
                self._error = exc

        self._thread = threading.Thread(target=supervise, name="mineru-fit-engine-supervisor", daemon=True)
        self._thread.start()
        urls = sorted({run.command.health_url for run in spec.runs})
        self._wait_healthy(urls, timeout_s=spec.health_timeout_s * len(spec.runs) + 30)
        base = next(run.command.base_url for run in spec.runs if healthy(run.command.health_url, timeout_s=2.0))
        return spec.info(base)

    def _wait_healthy(self, urls: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(healthy(url, timeout_s=2.0) for url in urls):
            if self._error is not None:
                raise self._error
            if self._thread is not None and not self._thread.is_alive():
                raise EngineError(f"the {self.spec.kind} engine stopped before it answered {urls[0]}")
            if time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"no answer from {urls[0]} within {timeout_s:g} s — see the engine's log")
            time.sleep(0.25)

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if self._record is not None:
            remove_record(self._record)
            self._record = None
        self._server = self._supervisor = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
