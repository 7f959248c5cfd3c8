"""Job errors as clients read them name files, never the server's absolute paths: the task's error and errors,
the result's per-file errors, and the zip's _pages.json."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

from fastapi.testclient import TestClient  # noqa: E402
from fixtures.documents import many_pages_pdf, pdf_with_pages  # noqa: E402

from mineru_fit.service import ServiceConfig  # noqa: E402
from mineru_fit.service.api import create_app  # noqa: E402
from mineru_fit.service.core import ServiceCore  # noqa: E402


def _submit(client: TestClient, name: str, data: bytes) -> dict:
    response = client.post("/tasks", files=[("files", (name, data, "application/pdf"))])
    assert response.status_code == 202, response.text
    return response.json()


def _finished(client: TestClient, url: str) -> dict:
    deadline = time.monotonic() + 90
    while (body := client.get(url).json())["status"] not in ("succeeded", "partial", "failed"):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    return body


def test_a_job_that_cannot_write_its_outputs_fails_without_showing_server_paths(tmp_path: Path) -> None:
    long = many_pages_pdf(tmp_path / "long.pdf", 60).read_bytes()
    short = pdf_with_pages(tmp_path / "short.pdf", ["text:One page"]).read_bytes()
    data_dir = tmp_path / "data"
    core = ServiceCore(ServiceConfig(data_dir=data_dir, workers=1))
    with TestClient(create_app(core)) as client:
        busy = _submit(client, "long.pdf", long)  # keeps the one worker busy while the next job's folder is spoiled
        blocked = _submit(client, "short.pdf", short)
        (core.job_dir(blocked["task_id"]) / "output").write_text("a file where the job's output folder goes")
        client.delete(busy["status_url"])
        status = _finished(client, blocked["status_url"])
        assert status["status"] == "failed" and status["error"], status
        result = client.get(blocked["result_url"])
        shown = [status["error"], *status["errors"], result.text]
        for text in shown:
            assert str(tmp_path) not in text and "/jobs/" not in text, text
    assert any("output" in text for text in shown)  # the reason still names what failed
