"""Reach the Ray cluster `--ray` names (or start a local one), and leave it as it was found."""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from mineru_fit.errors import MissingExtraError, UsageError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.2"


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the pipeline needs Ray Data, not just Ray core
    except ImportError as exc:
        raise MissingExtraError("ray[data]", "ray") from exc
    return ray


@dataclass(frozen=True)
class Cluster:
    dashboard_url: Optional[str]
    gpus: int
    cpus: int
    nodes: int

    def describe(self) -> str:
        return f"Ray cluster: {self.nodes} node(s), {self.cpus} CPU(s), {self.gpus} GPU(s)"


@contextmanager
def connect(address: str) -> Iterator[Cluster]:
    """auto: RAY_ADDRESS or a cluster `ray start` left on this machine, else a new local one;
    local: always a new local one; anything else: that cluster's address."""
    ray = import_ray()
    handlers = _signal_handlers()
    started = False
    if ray.is_initialized():  # a caller (a notebook, a test) already holds a connection: use it, keep it
        context = None
    else:
        target = {"auto": None, "local": "local"}.get(address, address)
        # A cluster of this machine alone listens on loopback only: Ray turns 127.0.0.1 into the
        # machine's network address, but leaves the rest of 127.0.0.0/8 alone.
        local = {"_node_ip_address": LOOPBACK} if address == "local" else {}
        try:
            context = ray.init(address=target, namespace=f"mineru-fit-{uuid.uuid4().hex[:8]}",
                               logging_level=logging.ERROR, log_to_driver=False, **local)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(f"--ray {address}: no Ray cluster answers there ({exc}) — start one with "
                             "`ray start --head`, or use --ray local") from exc
        started = True
    _quiet_ray_data()
    try:
        resources = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        dashboard = getattr(context, "dashboard_url", None) if context is not None else None
        yield Cluster(dashboard_url=f"http://{dashboard}" if dashboard and "://" not in dashboard else dashboard or None,
                      gpus=int(resources.get("GPU", 0)), cpus=int(resources.get("CPU", 0)), nodes=nodes)
    finally:
        if started:
            ray.shutdown()
            restore_signal_handlers(handlers)


def _signal_handlers() -> dict[int, Any]:
    return {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore_signal_handlers(handlers: dict[int, Any]) -> None:
    """ray.init installs its own SIGTERM handler and ray.shutdown leaves it: put ours back."""
    if threading.current_thread() is threading.main_thread():
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _quiet_ray_data() -> None:
    """One progress bar for the whole cluster is ours: Ray Data's bars and INFO lines are off."""
    from ray.data import DataContext

    data = DataContext.get_current()
    data.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
