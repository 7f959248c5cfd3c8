"""Nothing accepted is lost: `mineru-fit api` killed with SIGKILL mid-job, restarted on the same data dir, finishes
every job; a worker process that dies mid-job costs a rerun, not the job."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from fixtures.documents import many_pages_pdf, pdf_with_pages  # noqa: E402
from fixtures.servers import free_port  # noqa: E402
from fixtures.service import api_process, runner_pids, wait_status  # noqa: E402

from mineru_fit.service import ServiceConfig  # noqa: E402
from mineru_fit.service.api import create_app  # noqa: E402
from mineru_fit.service.core import ServiceCore  # noqa: E402

PAGES = 800  # a few seconds of flash work on one worker: long enough to be killed in the middle


def _submit(client: Any, name: str, data: bytes) -> dict[str, Any]:
    response = client.post("/tasks", files=[("files", (name, data, "application/pdf"))])
    assert response.status_code == 202, response.text
    return response.json()


def test_kill_9_mid_job_then_restart_finishes_every_accepted_job(tmp_path: Path) -> None:
    long = many_pages_pdf(tmp_path / "long.pdf", PAGES).read_bytes()
    short = pdf_with_pages(tmp_path / "short.pdf", ["text:Queued behind the long one"]).read_bytes()
    data_dir = tmp_path / "data"
    port = free_port()
    with api_process(data_dir, "--workers", "1", port=port) as (base, proc):
        with httpx.Client(base_url=base, timeout=30) as api:
            running = _submit(api, "long.pdf", long)
            queued = _submit(api, "short.pdf", short)
            wait_status(api, running["status_url"], {"running"})
            time.sleep(1.0)  # inside docvortex's parse of the 800 pages
            workers = runner_pids(proc.pid)
            assert workers, "the job runs in a worker process of the service"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    # The worker dies with the service: nothing goes on writing a job nobody owns.
    deadline = time.monotonic() + 10
    while workers & runner_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not workers & runner_pids()
    with api_process(data_dir, "--workers", "1", port=port) as (base, _proc):
        with httpx.Client(base_url=base, timeout=30) as api:
            for task, text in ((running, f"Page number {PAGES} of a long report"), (queued, "Queued behind")):
                status = wait_status(api, task["status_url"], {"succeeded", "partial", "failed"}, timeout_s=180)
                assert status["status"] == "succeeded", status
                result = api.get(task["result_url"]).json()
                assert text in next(iter(result["results"].values()))["md_content"]
            long_status = api.get(running["status_url"]).json()
            assert long_status["progress"]["pages_done"] == PAGES


def test_a_worker_that_dies_mid_job_costs_a_rerun_not_the_job(tmp_path: Path) -> None:
    long = many_pages_pdf(tmp_path / "long.pdf", PAGES // 2).read_bytes()
    core = ServiceCore(ServiceConfig(data_dir=tmp_path / "data", workers=1))
    with TestClient(create_app(core)) as client:
        task = _submit(client, "long.pdf", long)
        wait_status(client, task["status_url"], {"running"})
        time.sleep(0.5)
        assert core.pool is not None
        runner = core.pool.runners[0]
        assert runner is not None and runner.pid is not None
        os.kill(runner.pid, signal.SIGKILL)  # as the OOM killer or a segfault in a parser would
        status = wait_status(client, task["status_url"], {"succeeded", "partial", "failed"}, timeout_s=60)
        assert status["status"] == "succeeded", status
        assert "mineru_fit_api_worker_crashes_total 1.0" in client.get("/metrics").text
        # The slot has a fresh worker and goes on with the next job.
        other = _submit(client, "again.pdf", long)
        assert wait_status(client, other["status_url"], {"succeeded", "failed"})["status"] == "succeeded"
