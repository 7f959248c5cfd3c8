"""Inside an engine actor: plan for this actor's device and start the engine the plan implies.

The built-in engine runs in the actor's process (InProcessBackend, as a single-process parse);
SGLang or vLLM run as a local server the actor supervises (the engines' Supervisor, with its
own step-down when a start runs out of memory) and drives with MinerUClient over loopback
(ServerBackend); with --server every actor is a client of that endpoint and plans nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from mineru_fit.errors import EngineError, MineruFitError
from mineru_fit.scale.hardware import ActorDevice, actor_device, actor_plan, model_levels, node_label
from mineru_fit.scale.job import ActorJob
from mineru_fit.units import human

logger = logging.getLogger(__name__)


@dataclass
class ActorEngine:
    backend: Any
    label: str
    server: Optional["SupervisedServer"] = None
    info: dict[str, Any] = field(default_factory=dict)

    async def ensure_running(self) -> None:
        if self.server is not None and not self.server.alive():
            # The supervisor gave up on its server: end this process so Ray restarts the actor one level lower.
            logger.error("%s: the engine server stopped for good; exiting so Ray restarts this actor", self.label)
            os._exit(1)


def _model_dir(spec: ActorJob, settings: Any) -> Path:
    """The model folder on this node: the driver's path if it is here too, else this node's download."""
    from mineru_fit.models import where

    job = spec.job
    if job.model_dir is not None and Path(job.model_dir).is_dir():
        return Path(job.model_dir)
    found = where(job.model_id, models_dir=settings.models_dir)
    if found is None:
        raise MineruFitError(f"{job.model_id} is not on this node — run `mineru-fit models download` on every node, "
                             "or put the model on storage every node mounts at the same path")
    return found


def _summary(plan: Any, hw: Any) -> str:
    return (f"level {plan.level}, batch {plan.batch_size}, context {plan.max_model_len:,}, weights {plan.weight_format}"
            f" — predicted peak {human(plan.predicted_peak_bytes)} of {human(hw.budget_bytes)} ({hw.budget_reason})")


@dataclass(frozen=True)
class ActorPlan:
    """What an actor will run, decided before anything loads (so the driver shows it at once)."""

    label: str
    info: dict[str, Any]
    device: Optional[ActorDevice] = None
    model_dir: Optional[Path] = None
    levels: tuple[Any, ...] = ()
    settings: Any = None
    error: Optional[str] = None       # why this actor cannot parse (no level fits, no model on this node)


def plan_actor(spec: ActorJob, restarts: int) -> ActorPlan:
    """Plan for this actor's device, one level lower per earlier death of the actor."""
    from mineru_fit.settings import load_settings

    job = spec.job
    settings = load_settings()
    device = actor_device(settings)
    label = node_label(device)
    if job.server_url:
        return ActorPlan(label, {"label": label, "summary": f"client of {job.server_url}"}, device, settings=settings)
    model_dir = _model_dir(spec, settings)
    request = job.request.model_copy(update={"engine": job.engine, "model": str(model_dir),
                                             **({"port": _free_port()} if job.engine != "builtin" else {})})
    report = actor_plan(model_dir, device, request, settings)
    levels = model_levels(report, restarts)
    info = _plan_info(label, device, report, levels, restarts)
    error = None if levels else (f"no model level fits {device.hardware.name} ({report.reason}) — free memory on it, "
                                 "or parse these documents with --tier flash")
    return ActorPlan(label, info, device, model_dir, levels, settings, error)


async def start_engine(spec: ActorJob, planned: ActorPlan, say: Callable[[str], None]) -> ActorEngine:
    """Start the engine `planned` names: in this process, as a supervised server, or a client of --server."""
    from mineru_fit.parsing.vlm.backends import InProcessBackend, ServerBackend

    job = spec.job
    if job.server_url:
        backend = ServerBackend(job.server_url, concurrency=job.request.concurrency, max_new_tokens=job.max_new_tokens,
                                max_model_len=job.request.max_model_len)
        await backend.start()
        return ActorEngine(backend, planned.label)
    levels = planned.levels
    if job.engine == "builtin":
        assert planned.device is not None and planned.model_dir is not None
        backend = InProcessBackend(levels, planned.model_dir, device=planned.device.engine_device,
                                   max_new_tokens=job.max_new_tokens)
        await backend.start()
        return ActorEngine(backend, planned.label, info=planned.info)
    server = SupervisedServer(levels, planned.settings, say)
    url = await asyncio.to_thread(server.start)
    backend = ServerBackend(url, concurrency=levels[0].batch_size, max_new_tokens=job.max_new_tokens,
                            max_model_len=levels[0].max_model_len)
    await backend.start()
    return ActorEngine(backend, planned.label, server=server, info=planned.info)


def _plan_info(label: str, device: ActorDevice, report: Any, levels: tuple[Any, ...], restarts: int) -> dict[str, Any]:
    hw = device.hardware
    plan = levels[0] if levels else None
    summary = _summary(plan, hw) if plan is not None else f"no model level fits ({report.reason})"
    if restarts and plan is not None:
        summary += f"; restart {restarts}: {restarts} level(s) below the plan's {report.chosen_level}"
    if device.simulated_from is not None:
        summary += f"; planned for the recorded {device.simulated_from.name}, running on the CPU"
    return {
        "label": label, "summary": summary, "device": hw.name, "total_bytes": hw.total_bytes,
        "free_bytes": hw.free_bytes, "budget_bytes": hw.budget_bytes, "chosen_level": report.chosen_level,
        "level": plan.level if plan else None, "batch_size": plan.batch_size if plan else None,
        "max_model_len": plan.max_model_len if plan else None,
        "predicted_peak_bytes": plan.predicted_peak_bytes if plan else None, "engine": report.engine,
        "plan": plan.model_dump(mode="json") if plan else None,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SupervisedServer:
    """SGLang/vLLM for this actor's GPU under the engines' Supervisor, in a thread; the levels it may step down to."""

    def __init__(self, levels: tuple[Any, ...], settings: Any, say: Callable[[str], None]) -> None:
        self.levels = levels
        self.settings = settings
        self.say = say
        self.supervisor: Any = None
        self.thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None

    def _runs(self) -> list[Any]:
        from mineru_fit.engines import launch
        from mineru_fit.engines.supervisor import LevelRun
        from mineru_fit.engines.vllm import find_vl_utils

        engine = self.levels[0].engine
        executable = self.settings.sglang_executable if engine == "sglang" else self.settings.vllm_executable
        launcher = shlex.split(executable) if executable else None
        installed = None if launcher else launch.require_installed(engine)
        vl_utils = find_vl_utils() if engine == "vllm" else None
        return [LevelRun(plan, launch.engine_command(plan, installed=installed, launcher=launcher, vl_utils=vl_utils))
                for plan in self.levels]

    def start(self) -> str:
        """Blocks until one level serves; its base URL."""
        from mineru_fit.engines.process import healthy
        from mineru_fit.engines.supervisor import Supervisor

        runs = self._runs()
        self.supervisor = Supervisor(runs, report=self.say)

        def supervise() -> None:
            try:
                self.supervisor.run()
            except BaseException as exc:  # start() and alive() report it
                self.error = exc

        self.thread = threading.Thread(target=supervise, name="mineru-fit-supervisor", daemon=True)
        self.thread.start()
        while self.thread.is_alive():
            for run in runs:
                if healthy(run.command.health_url, timeout_s=2.0):
                    return run.command.base_url
            self.thread.join(timeout=0.5)
        raise self.error if isinstance(self.error, MineruFitError) else EngineError(f"the engine stopped: {self.error}")

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.thread is not None:
            self.thread.join(timeout=60)

