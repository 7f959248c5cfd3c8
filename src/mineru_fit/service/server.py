"""Run the service: bind its port, start (or reach) the engine, serve the API (and the UI) until stopped."""

from __future__ import annotations

import importlib.util
import logging
import socket
from dataclasses import replace
from typing import Any, Callable

from mineru_fit.errors import MissingExtraError, UsageError
from mineru_fit.service.config import ServiceConfig
from mineru_fit.service.engine import EngineHandle, EngineSpec

logger = logging.getLogger(__name__)


def require_extras(*, ui: bool) -> None:
    """MissingExtraError naming the pip extra, before anything starts."""
    needed = [("fastapi", "fastapi", "api"), ("uvicorn", "uvicorn", "api"), ("multipart", "python-multipart", "api")]
    if ui:
        needed.append(("gradio", "gradio", "ui"))
    for module, package, extra in needed:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(package, extra)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the engine loads (minutes) so a taken port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc}) — pick another --port "
                         "or stop what holds it") from exc
    return sock


def build_app(config: ServiceConfig, *, ui: bool) -> Any:
    """The API app over a fresh core: the 2.x routes, MinerU 4's /v1, and the UI at /ui when asked."""
    from mineru_fit.service.api import create_app
    from mineru_fit.service.core import ServiceCore

    from mineru_fit.service.v1 import OPEN_PATHS, mount_v1

    core = ServiceCore(config)
    if not ui:
        app = create_app(core, open_prefixes=OPEN_PATHS)
        mount_v1(app, core)  # MinerU 4's /v1 API beside the 2.x routes, over the same core
        return app
    from mineru_fit.service.ui import UI_PATH, mount_ui

    app = create_app(core, open_prefixes=(UI_PATH, *OPEN_PATHS))
    mount_v1(app, core)
    return mount_ui(app, core)


def run_service(config: ServiceConfig, engine: EngineSpec, *, host: str, port: int, ui: bool = False,
                report: Callable[[str], None] = logger.warning) -> None:
    """Serve until SIGINT/SIGTERM; the engine this started is stopped on every way out."""
    require_extras(ui=ui)
    import uvicorn

    from mineru_fit.service.core import STORE_NAME
    from mineru_fit.service.disk import check_data_dir

    check_data_dir(config.data_dir, STORE_NAME)  # a full or read-only data dir: one line, before anything starts
    sock = bind(host, port)
    handle = EngineHandle(engine, report)
    try:
        info = handle.start()
        app = build_app(replace(config, engine=info), ui=ui)
        where = f"http://{host}:{port}"
        report(f"mineru-fit {'UI at ' + where + '/ui/ and ' if ui else ''}parse API at {where} (docs {where}/docs); "
               f"tiers: {'vlm and flash' if info.url else 'flash only'}; {config.workers} worker{'s' if config.workers != 1 else ''}")
        uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10)).run(sockets=[sock])
    finally:
        handle.stop()
        sock.close()
