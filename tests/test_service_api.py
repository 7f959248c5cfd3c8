"""The parse API in this process (FastAPI's TestClient and httpx's ASGITransport): mineru-api's form and answers,
the task flow, and every refusal with its status — real PDFs through the real flash tier in worker processes."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from fixtures.documents import encrypted_pdf, many_pages_pdf, pdf_with_pages  # noqa: E402

from mineru_fit.parsing.sample import HEADINGS, TABLE, write_sample_pdf  # noqa: E402
from mineru_fit.service import Limits, ServiceConfig  # noqa: E402
from mineru_fit.service.api import create_app  # noqa: E402
from mineru_fit.service.core import ServiceCore  # noqa: E402
from mineru_fit.units import MIB  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("docs")
    return {
        "sample": write_sample_pdf(folder / "sample.pdf").read_bytes(),
        "two": pdf_with_pages(folder / "two.pdf", ["text:First page heading", "text:Second page heading"]).read_bytes(),
        "locked": encrypted_pdf(folder / "locked.pdf", "pw").read_bytes(),
        "long": many_pages_pdf(folder / "long.pdf", 700).read_bytes(),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, ServiceCore]]:
    config = ServiceConfig(data_dir=tmp_path_factory.mktemp("data"), workers=2,
                           limits=Limits(max_upload_bytes=2 * MIB, max_pages=20, max_files=3))
    core = ServiceCore(config)
    with TestClient(create_app(core)) as test_client:
        yield test_client, core


@pytest.fixture(scope="module")
def client(served: tuple[TestClient, ServiceCore]) -> TestClient:
    return served[0]


def upload(*files: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/pdf")) for name, data in files]


def assert_sample(result: dict[str, Any]) -> None:
    """The sample's heading in the Markdown and a table cell in the content list."""
    assert result["status"] == "success" and result["errors"] == []
    assert f"## {HEADINGS[1]}" in result["md_content"]
    table = next(item for item in json.loads(result["content_list"]) if item["type"] == "table")
    assert f"<td>{TABLE[2][1]}</td>" in table["table_body"]


def wait_result(client: Any, task_id: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/tasks/{task_id}/result")
        if response.status_code != 409 or time.monotonic() > deadline:
            return response
        assert response.headers["retry-after"]
        time.sleep(0.1)


def test_file_parse_answers_like_mineru_api(client: TestClient, docs) -> None:
    response = client.post("/file_parse", files=upload(("sample.pdf", docs["sample"])),
                           data={"backend": "pipeline", "return_content_list": "true", "return_images": "true",
                                 "lang_list": ["en"], "formula_enable": "false", "table_enable": "true"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["backend"], body["tier"], body["status"]) == ("pipeline", "flash", "succeeded")
    assert body["version"] and body["task_id"] == response.headers["x-task-id"]
    assert list(body["results"]) == ["sample"]
    result = body["results"]["sample"]
    assert_sample(result)
    assert result["images"] and all(v.startswith("data:image/") for v in result["images"].values())
    # Every image the Markdown links to comes with the result.
    links = re.findall(r"\]\(images/([^)]+)\)", result["md_content"])
    assert links and set(links) <= set(result["images"])


def test_file_parse_returns_only_what_was_asked_for(client: TestClient, docs) -> None:
    body = client.post("/file_parse", files=upload(("two.pdf", docs["two"]))).json()
    result = body["results"]["two"]
    assert "First page heading" in result["md_content"] and "content_list" not in result and "images" not in result


def test_page_ids_count_from_zero(client: TestClient, docs) -> None:
    body = client.post("/file_parse", files=upload(("two.pdf", docs["two"])),
                       data={"start_page_id": "1", "end_page_id": "1", "return_content_list": "true"}).json()
    result = body["results"]["two"]
    assert "Second page heading" in result["md_content"] and "First page heading" not in result["md_content"]
    assert {item["page_idx"] for item in json.loads(result["content_list"])} == {1}


def test_a_zip_holds_mineru_layout(client: TestClient, docs) -> None:
    response = client.post("/file_parse", files=upload(("sample.pdf", docs["sample"])),
                           data={"response_format_zip": "true", "return_content_list": "true", "return_images": "true"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert {"sample/sample.md", "sample/sample_content_list.json", "sample/sample_pages.json"} <= set(names)
    assert any(n.startswith("sample/images/") for n in names)


def test_tasks_accept_at_once_then_report_progress_and_result(client: TestClient, docs) -> None:
    response = client.post("/tasks", files=upload(("a.pdf", docs["sample"]), ("a.pdf", docs["two"])),
                           data={"return_content_list": "true"})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == accepted["status_url"] == f"/tasks/{accepted['task_id']}"
    assert accepted["progress"]["pages_total"] == 5
    # Two uploads named alike get two names, so neither overwrites the other.
    assert [f["name"] for f in accepted["files"]] == ["a", "a_2"]
    result = wait_result(client, accepted["task_id"])
    assert result.status_code == 200
    assert_sample(result.json()["results"]["a"])
    assert "Second page heading" in result.json()["results"]["a_2"]["md_content"]
    status = client.get(accepted["status_url"]).json()
    assert status["status"] == "succeeded" and status["progress"] == {"pages_done": 5, "pages_failed": 0, "pages_total": 5}
    zipped = client.get(f"{accepted['result_url']}?format=zip")
    assert zipped.headers["content-type"] == "application/zip"


def test_a_traversal_name_stays_inside_the_job(served, docs) -> None:
    client, core = served
    response = client.post("/tasks", files=upload(("../../../../evil.pdf", docs["two"]), ("/etc/passwd", docs["two"])))
    assert response.status_code == 202
    task = response.json()
    assert [f["name"] for f in task["files"]] == ["evil", "passwd"]
    assert [f["filename"] for f in task["files"]] == ["../../../../evil.pdf", "/etc/passwd"]
    assert wait_result(client, task["task_id"]).status_code == 200
    stored = sorted(p.name for p in (core.job_dir(task["task_id"]) / "inputs").iterdir())
    assert stored == ["evil.pdf", "passwd"]
    job_inputs = core.job_dir(task["task_id"]) / "inputs"
    assert list(core.config.data_dir.parent.rglob("evil.pdf")) == [job_inputs / "evil.pdf"]


@pytest.mark.parametrize("name, data, status, words", [
    ("notes.docx", b"PK\x03\x04" + b"\x00" * 200, 415, "ZIP archive"),
    ("page.html", b"<!DOCTYPE html><html><body>hi</body></html>", 415, "HTML page"),
    ("report.pdf", b"this is plain text, not a PDF", 415, "not a PDF"),
    ("empty.pdf", b"", 422, "empty"),
    ("broken.pdf", b"%PDF-1.7\n" + b"garbage" * 100, 422, "corrupt"),
])
def test_wrong_or_broken_files_are_refused_with_a_clear_message(client: TestClient, name, data, status, words) -> None:
    response = client.post("/tasks", files=upload((name, data)))
    assert response.status_code == status
    detail = response.json()["detail"]
    assert words in detail and name in detail and "/jobs/" not in detail  # the client's name, never our path


def test_an_encrypted_pdf_is_refused_saying_the_api_takes_no_password(client: TestClient, docs) -> None:
    response = client.post("/tasks", files=upload(("locked.pdf", docs["locked"])))
    assert response.status_code == 422 and "encrypted" in response.json()["detail"]
    assert "--password" not in response.json()["detail"]


def test_limits_are_refused_with_413_or_422(client: TestClient, docs) -> None:
    big = client.post("/tasks", files=upload(("big.pdf", b"%PDF-1.4\n" + b"0" * (3 * MIB))))
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    many = client.post("/tasks", files=upload(*[(f"{n}.pdf", docs["two"]) for n in range(4)]))
    assert many.status_code == 413 and "--max-files" in many.json()["detail"]
    pages = client.post("/tasks", files=upload(("long.pdf", docs["long"])))
    assert pages.status_code == 422 and "700 pages" in pages.json()["detail"]
    beyond = client.post("/tasks", files=upload(("two.pdf", docs["two"])), data={"start_page_id": "5"})
    assert beyond.status_code == 422 and "counts from 0" in beyond.json()["detail"]


@pytest.mark.parametrize("data, words", [
    ({"backend": "vlm"}, "vlm tier is not available"),
    ({"backend": "nonsense"}, "not known"),
    ({"server_url": "http://example.com/"}, "never contacts"),
    ({"unknown_field": "1"}, "Extra inputs"),
    ({"start_page_id": "-1"}, "greater than or equal"),
])
def test_form_values_that_cannot_be_honoured_are_422(client: TestClient, docs, data, words) -> None:
    response = client.post("/file_parse", files=upload(("two.pdf", docs["two"])), data=data)
    assert response.status_code == 422 and words in response.text


def test_a_scanned_pdf_on_the_flash_tier_fails_with_the_reason(client: TestClient, tmp_path: Path) -> None:
    scanned = pdf_with_pages(tmp_path / "scan.pdf", ["scan"]).read_bytes()
    response = client.post("/file_parse", files=upload(("scan.pdf", scanned)))
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == "failed" and "no text layer" in body["error"]
    assert body["results"]["scan"]["status"] == "failure" and "needs the vlm tier" in body["results"]["scan"]["errors"][0]


def test_unknown_tasks_are_404(client: TestClient) -> None:
    assert client.get("/tasks/" + "0" * 32).status_code == 404
    assert client.get("/tasks/../../etc/passwd/result").status_code == 404
    assert client.delete("/tasks/nope").status_code == 404


def test_health_and_metrics(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["tiers"] == ["flash"] and health["workers"] == 2
    text = client.get("/metrics").text
    for name in ("mineru_fit_api_jobs_queued", "mineru_fit_api_jobs_running", "mineru_fit_api_jobs_finished_total",
                 "mineru_fit_api_pages_per_second", "mineru_fit_api_pages_total"):
        assert name in text
    assert 'mineru_fit_api_jobs_finished_total{status="succeeded"}' in text
    assert client.get("/docs").status_code == 200 and "/file_parse" in client.get("/openapi.json").json()["paths"]


def test_without_the_token_only_health_and_docs_answer(tmp_path: Path, docs) -> None:
    config = ServiceConfig(data_dir=tmp_path / "data", workers=1, token=TOKEN)
    with TestClient(create_app(ServiceCore(config))) as locked:
        for method, path in (("get", "/metrics"), ("get", "/tasks/" + "0" * 32), ("post", "/tasks"),
                             ("post", "/file_parse"), ("delete", "/tasks/" + "0" * 32)):
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}):
                response = getattr(locked, method)(path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
        assert locked.get("/health").status_code == 200 and locked.get("/openapi.json").status_code == 200
        good = {"authorization": f"Bearer {TOKEN}"}
        response = locked.post("/file_parse", files=upload(("two.pdf", docs["two"])), headers=good)
        assert response.status_code == 200 and "First page heading" in response.json()["results"]["two"]["md_content"]
        assert locked.get("/metrics", headers=good).status_code == 200


def test_a_full_queue_answers_503_with_retry_after_and_a_running_task_409(tmp_path: Path, docs) -> None:
    long = many_pages_pdf(tmp_path / "long.pdf", 600).read_bytes()
    config = ServiceConfig(data_dir=tmp_path / "data", workers=1, max_queue=1)
    with TestClient(create_app(ServiceCore(config))) as small:
        first = small.post("/tasks", files=upload(("long.pdf", long))).json()
        deadline = time.monotonic() + 30
        while small.get(first["status_url"]).json()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        second = small.post("/tasks", files=upload(("two.pdf", docs["two"])))
        assert second.status_code == 202 and second.json()["queue_position"] == 1
        third = small.post("/tasks", files=upload(("two.pdf", docs["two"])))
        assert third.status_code == 503 and int(third.headers["retry-after"]) >= 1
        not_done = small.get(first["result_url"])
        assert not_done.status_code == 409 and not_done.json()["status"] == "running"
        # Deleting the running task stops its worker; the queued one still completes.
        assert small.delete(first["status_url"]).status_code == 204
        assert small.get(first["status_url"]).status_code == 404
        assert wait_result(small, second.json()["task_id"]).status_code == 200


def test_concurrent_uploads_through_the_asgi_transport(tmp_path: Path, docs) -> None:
    async def scenario() -> list[dict[str, Any]]:
        core = ServiceCore(ServiceConfig(data_dir=tmp_path / "data", workers=3))
        app = create_app(core, manage_core=False)
        async with core:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=120) as api:
                responses = await asyncio.gather(*(
                    api.post("/file_parse", files=upload((f"doc{n}.pdf", docs["sample"])),
                             data={"return_content_list": "true"}) for n in range(8)))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        return [r.json() for r in responses]

    bodies = asyncio.run(scenario())
    assert len({b["task_id"] for b in bodies}) == 8
    for n, body in enumerate(bodies):
        assert_sample(body["results"][f"doc{n}"])
