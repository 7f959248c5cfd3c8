"""Work whose client is gone stops: a deleted job, or a /file_parse whose client hung up, has its worker stopped
and its in-flight requests to the engine closed — the engine sees them go at once, instead of generating on.

The engine here is a faithful fake at the edge (no model on this machine): an OpenAI-compatible server whose
chat completion never finishes and that records when its client disconnects.
"""

from __future__ import annotations

import asyncio
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("mineru_vl_utils")
pytest.importorskip("reportlab")

from fastapi import FastAPI, Request  # noqa: E402
from fixtures.documents import pdf_with_pages  # noqa: E402
from fixtures.servers import serving  # noqa: E402
from fixtures.service import runner_pids  # noqa: E402

from mineru_fit.service import EngineInfo, ServiceConfig  # noqa: E402
from mineru_fit.service.api import create_app  # noqa: E402
from mineru_fit.service.core import ServiceCore  # noqa: E402


class HangingEngine:
    """Records each chat completion it is sent and when its client goes; never answers one."""

    def __init__(self) -> None:
        self.started = 0
        self.gone = 0
        app = FastAPI()

        @app.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "mineru", "object": "model", "max_model_len": 4096}]}

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> dict[str, Any]:
            await request.body()
            self.started += 1
            for _ in range(1200):  # 2 minutes at most: the test never waits that long
                if await request.is_disconnected():
                    self.gone += 1
                    break
                await asyncio.sleep(0.1)
            return {}

        self.app = app


@contextmanager
def _service(tmp_path: Path) -> Iterator[tuple[str, ServiceCore, HangingEngine]]:
    engine = HangingEngine()
    with serving(engine.app) as engine_url:
        info = EngineInfo(url=engine_url, kind="server", reason="a hanging test engine", max_model_len=4096,
                          concurrency=1)
        core = ServiceCore(ServiceConfig(data_dir=tmp_path / "data", workers=1, engine=info))
        with serving(create_app(core)) as base:
            yield base, core, engine


def _until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_deleting_a_running_job_closes_its_engine_requests_and_stops_its_worker(tmp_path: Path) -> None:
    import httpx

    pdf = pdf_with_pages(tmp_path / "one.pdf", ["text:A page for the engine"]).read_bytes()
    with _service(tmp_path) as (base, core, engine):
        task = httpx.post(f"{base}/tasks", files=[("files", ("one.pdf", pdf, "application/pdf"))],
                          data={"backend": "vlm"}, timeout=30).json()
        _until(lambda: engine.started >= 1, 60, "the job never reached the engine")
        assert core.pool is not None
        workers = set(core.pool.pids())  # this service's own (other services may run on the machine)
        assert workers
        assert httpx.delete(f"{base}{task['status_url']}", timeout=30).status_code == 204
        _until(lambda: engine.gone >= engine.started, 10, "the engine still holds the deleted job's requests")
        _until(lambda: not workers & runner_pids(), 10, "the deleted job's worker still runs")
        assert httpx.get(f"{base}{task['status_url']}", timeout=30).status_code == 404


def test_a_file_parse_client_that_hangs_up_stops_its_job(tmp_path: Path) -> None:
    pdf = pdf_with_pages(tmp_path / "one.pdf", ["text:A page for the engine"]).read_bytes()
    boundary = "hangup"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"backend\"\r\n\r\nvlm\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"one.pdf\"\r\n"
            "Content-Type: application/pdf\r\n\r\n").encode() + pdf + f"\r\n--{boundary}--\r\n".encode()
    with _service(tmp_path) as (base, core, engine):
        port = int(base.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(f"POST /file_parse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
                     f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode() + body)
        _until(lambda: engine.started >= 1, 60, "the job never reached the engine")
        assert core.store is not None and len(core.store.ids()) == 1
        sock.close()  # the client gives up: nobody will ever read this job's answer
        _until(lambda: engine.gone >= engine.started, 10, "the engine still generates for a client that left")
        _until(lambda: core.store is not None and not core.store.ids(), 10, "the abandoned job is still stored")
