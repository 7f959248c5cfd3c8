"""MinerU 4's /v1 API on mineru-fit (flash tier, no model): routes, bodies, status codes and the error body
as mineru==4.0.12's own server answers them (mineru/parser/api_server.py, task_api.py)."""

from __future__ import annotations

import hashlib
import io
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

from fixtures.documents import many_pages_pdf, pdf_with_pages  # noqa: E402
from fixtures.service import running_service  # noqa: E402
from mineru_fit.parsing.sample import write_sample_pdf  # noqa: E402
from mineru_fit.service import ServiceConfig  # noqa: E402
from mineru_fit.service.config import Limits  # noqa: E402
from mineru_fit.service.server import build_app  # noqa: E402

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("v1") / "data"


@pytest.fixture(scope="module")
def base(data_dir: Path) -> Iterator[str]:
    with running_service(ServiceConfig(data_dir=data_dir, workers=1)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_sample_pdf(tmp_path_factory.mktemp("pdf") / "sample.pdf").read_bytes()


def _error(response: httpx.Response, status: int, code: str, param: Any = "*") -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "code", "message", "param"} and error["code"] == code and error["message"]
    if param != "*":
        assert error["param"] == param
    return error


def _poll(client: httpx.Client, path: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(path).json()
        if job["status"] in ("completed", "partial", "failed", "canceled") or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def test_probes_say_what_runs_here_and_nothing_else(client: httpx.Client) -> None:
    health = client.get("/v1/health").json()
    assert health["status"] == "ok"
    assert health["features"] == {"webhook": False, "output_formats": ["markdown", "middle_json", "structured_content",
                                                                       "zip"], "sources": ["file_id", "inline"]}
    tiers = client.get("/v1/tiers").json()
    assert [t["id"] for t in tiers["data"]] == ["flash"]  # no engine here: standard is not advertised
    assert "born-digital" in tiers["data"][0]["description"]
    models = client.get("/v1/models").json()["data"]
    assert models[0]["object"] == "model" and client.get(f"/v1/models/{models[0]['id']}").status_code == 200
    _error(client.get("/v1/models/nope"), 404, "model_not_found")


def test_an_upload_goes_pending_put_complete_and_its_bytes_stay_private(client: httpx.Client, sample: bytes) -> None:
    sha = hashlib.sha256(sample).hexdigest()
    created = client.post("/v1/uploads", json={"filename": "sample.pdf", "bytes": len(sample),
                                                "mime_type": "application/pdf", "sha256sum": sha}).json()
    assert created["status"] == "pending" and created["upload_method"] == "PUT"
    assert created["upload_url"].endswith(f"/v1/uploads/{created['id']}/content") and created["file"] is None
    _error(client.post(f"/v1/uploads/{created['id']}/complete"), 409, "upload_not_ready")
    _error(client.put(created["upload_url"], content=sample[:-1]), 413, "upload_size_mismatch")
    assert client.put(created["upload_url"], content=sample).status_code == 200
    done = client.post(f"/v1/uploads/{created['id']}/complete", json={"sha256sum": sha}).json()
    assert done["status"] == "completed" and done["file"]["sha256sum"] == sha and done["file"]["purpose"] == "parse"
    _error(client.post(f"/v1/uploads/{created['id']}/cancel"), 409, "upload_already_terminal")
    # The same bytes declared again: completed at once, nothing to send (MinerU's hash reuse).
    again = client.post("/v1/uploads", json={"filename": "b.pdf", "bytes": len(sample),
                                              "mime_type": "application/pdf", "sha256sum": sha}).json()
    assert again["status"] == "completed" and again["file"]["id"] != done["file"]["id"]
    # Source bytes are never served back.
    _error(client.get(f"/v1/files/{done['file']['id']}/content"), 403, "feature_requires_api_key")
    pending = client.post("/v1/uploads", json={"filename": "c.pdf", "bytes": 10, "mime_type": "application/pdf"}).json()
    assert client.post(f"/v1/uploads/{pending['id']}/cancel").json()["status"] == "cancelled"
    _error(client.put(f"/v1/uploads/{pending['id']}/content", content=b"0123456789"), 409, "upload_already_terminal")
    _error(client.post("/v1/uploads", json={"filename": "x", "bytes": 1, "mime_type": "a", "colour": 1}), 400,
           "invalid_request", "colour")


def test_a_job_from_an_upload_completes_with_mineru4_payload_and_outputs(client: httpx.Client, sample: bytes) -> None:
    created = client.post("/v1/uploads", json={"filename": "paper.pdf", "bytes": len(sample),
                                                "mime_type": "application/pdf"}).json()
    client.put(created["upload_url"], content=sample)
    file_id = client.post(f"/v1/uploads/{created['id']}/complete").json()["file"]["id"]
    submitted = client.post("/v1/parse/jobs", json={
        "files": [{"source": {"type": "file_id", "file_id": file_id}, "page_range": "1-2"}], "tier": "flash",
        "output_formats": ["markdown", "middle_json", "structured_content", "zip"]})
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["job_id"].startswith("job_") and job["status"] in ("queued", "running", "completed")
    assert ISO.match(job["created_at"]) and job["links"] == {"self": f"/v1/parse/jobs/{job['job_id']}",
                                                             "cancel": f"/v1/parse/jobs/{job['job_id']}"}
    job = _poll(client, job["links"]["self"])
    assert job["status"] == "completed" and job["tier"] == "flash" and job["access_level"] == "anonymous"
    assert ISO.match(job["started_at"]) and ISO.match(job["finished_at"])
    assert job["progress"] == {"completed": 1, "failed": 0, "total": 1}
    entry = job["files"][0]
    assert entry["name"] == "paper.pdf" and entry["file_id"] == file_id and entry["page_range"] == "1-2"
    assert set(entry["output_files"]) == {"markdown", "middle_json", "structured_content", "zip"}
    markdown = client.get(f"/v1/files/{entry['output_files']['markdown']['file_id']}/content").text
    assert markdown.startswith("# mineru-fit sample document") and "Table 1" in markdown and "Conclusion" not in markdown
    meta = client.get(f"/v1/files/{entry['output_files']['markdown']['file_id']}").json()
    assert meta["filename"] == "paper.pdf.md" and meta["purpose"] == "parse_output"
    middle = client.get(f"/v1/files/{entry['output_files']['middle_json']['file_id']}/content").json()
    assert middle["schema"] == "docvortex.middle" and [p["page_idx"] for p in middle["pages"]] == [0, 1]
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/v1/files/{entry['output_files']['zip']['file_id']}/content").content))
    names = set(archive.namelist())
    assert {"markdown.md", "middle_json.json", "structured_content.json"} <= names
    assert any(n.startswith("images/") for n in names) and archive.read("markdown.md").decode() == markdown
    listed = client.get("/v1/parse/jobs", params={"status": "completed"}).json()
    assert job["job_id"] in [j["job_id"] for j in listed["data"]]
    assert client.get("/v1/usage").json()["current"]["jobs_created"] >= 1
    _error(client.delete(job["links"]["cancel"]), 409, "job_already_terminal")
    _error(client.get("/v1/parse/jobs/job_0000"), 404, "job_not_found")


def test_tasks_take_multipart_raw_and_json_and_answer_inline_or_zip(client: httpx.Client, sample: bytes,
                                                                   tmp_path: Path) -> None:
    task = client.post("/v1/tasks", params={"tier": "flash", "output_formats": ["markdown", "middle_json"]},
                       files=[("files", ("a.pdf", sample, "application/pdf"))])
    assert task.status_code == 202 and task.json()["status_url"] == f"/v1/tasks/{task.json()['task_id']}"
    done = _poll(client, task.json()["status_url"])
    result = client.get(done["result_url"]).json()
    content = result["files"][0]["content"]
    assert content["markdown"].startswith("# mineru-fit sample") and content["middle_json"]["pages"]
    _error(client.get(done["result_url"], params={"response_format": "zip"}), 400, "unsupported_output_format")
    raw = client.post("/v1/file_parse", params={"tier": "flash", "filename": "raw.pdf",
                                                "sha256sum": hashlib.sha256(sample).hexdigest(),
                                                "response_format": "zip"},
                      content=sample, headers={"content-type": "application/octet-stream"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/zip"
    assert "middle_json.json" in zipfile.ZipFile(io.BytesIO(raw.content)).namelist()
    two = pdf_with_pages(tmp_path / "two.pdf", ["text:Second document"]).read_bytes()
    both = client.post("/v1/file_parse", params={"tier": "flash", "response_format": "zip"},
                       files=[("files", ("a.pdf", sample, "application/pdf")), ("files", ("b.pdf", two, "application/pdf"))])
    names = zipfile.ZipFile(io.BytesIO(both.content)).namelist()
    assert "manifest.json" in names and "0001/markdown.md" in names and "0002/markdown.md" in names
    import base64
    inline = client.post("/v1/file_parse", json={"files": [{"source": {"type": "inline", "name": "b.pdf",
                                                                       "data": base64.b64encode(two).decode()}}],
                                                 "tier": "flash"})
    assert "Second document" in inline.json()["files"][0]["content"]["markdown"]


@pytest.mark.parametrize("params, json_body, code, param, status", [
    ({"tier": "basic"}, None, "tier_not_supported", "tier", 400),
    ({"tier": "advanced"}, None, "tier_not_supported", "tier", 400),
    ({"tier": "standard"}, None, "tier_unavailable", "tier", 400),
    ({}, None, "quality_tier_unavailable", None, 503),
    ({"tier": "flash", "backend": "vlm"}, None, "invalid_request", "backend", 400),
    ({"tier": "flash", "ocr_mode": "ocr"}, None, "invalid_request", "ocr_mode", 400),
    ({"tier": "flash", "page_range": "r3-r1"}, None, "invalid_request", "page_range", 400),
    ({"tier": "flash", "output_formats": ["docx"]}, None, "unsupported_output_format", "output_formats", 400),
    (None, {"files": [{"source": {"type": "url", "url": "https://example.org/a.pdf"}}], "tier": "flash"},
     "unsupported_source", "files.0.source", 400),
    (None, {"files": [{"source": {"type": "local", "path": "/etc/passwd"}}], "tier": "flash"},
     "unsupported_source", "files.0.source", 400),
    (None, {"files": [{"source": {"type": "inline", "name": "a.pdf", "data": "AAAA"}}], "tier": "flash",
            "callback": {"url": "https://example.org"}}, "invalid_request", "callback", 400),
])
def test_what_cannot_be_honoured_is_refused_by_name(client: httpx.Client, sample: bytes, params: Any, json_body: Any,
                                                    code: str, param: Any, status: int) -> None:
    if json_body is not None:
        response = client.post("/v1/tasks", json=json_body)
    else:
        response = client.post("/v1/tasks", params=params, files=[("files", ("a.pdf", sample, "application/pdf"))])
    _error(response, status, code, param)


def test_a_bad_file_is_refused_before_a_job_exists(client: httpx.Client) -> None:
    error = _error(client.post("/v1/tasks", params={"tier": "flash"}, files=[("files", ("a.pdf", b"hello", "text/plain"))]),
                   415, "unsupported_file_type", "files")
    assert "a.pdf" in error["message"]
    _error(client.post("/v1/file_parse", params={"tier": "flash"}, content=b"%PDF",
                       headers={"content-type": "application/octet-stream"}), 400, "invalid_request", "filename")


def test_cancel_stops_a_waiting_job_and_keeps_it_visible_as_canceled(client: httpx.Client, tmp_path: Path,
                                                                     sample: bytes) -> None:
    long = many_pages_pdf(tmp_path / "long.pdf", 40).read_bytes()
    first = client.post("/v1/tasks", params={"tier": "flash"}, files=[("files", ("long.pdf", long, "application/pdf"))])
    second = client.post("/v1/tasks", params={"tier": "flash"}, files=[("files", ("s.pdf", sample, "application/pdf"))])
    waiting = second.json()  # one worker: the second job waits behind the first
    assert waiting["status"] == "queued"
    canceled = client.delete(waiting["links"]["cancel"]).json()
    assert canceled["status"] == "canceled" and canceled["task_id"] == waiting["task_id"]
    again = client.get(waiting["status_url"]).json()
    assert again["status"] == "canceled" and ISO.match(again["finished_at"])
    assert client.get(waiting["result_url"]).status_code == 409
    _error(client.delete(f"/v1/parse/jobs/{waiting['task_id']}"), 409, "job_already_terminal")
    assert _poll(client, first.json()["status_url"])["status"] == "completed"


def test_the_door_asks_v1_for_the_token_but_not_its_probes_and_cuts_off_an_unsized_body(tmp_path: Path) -> None:
    app = build_app(ServiceConfig(data_dir=tmp_path / "data", workers=1, token="s3cret",
                                  limits=Limits(max_upload_bytes=1024)), ui=False)
    with TestClient(app) as locked:
        for path in ("/v1/health", "/v1/tiers", "/v1/models"):
            assert locked.get(path).status_code == 200
        _error(locked.get("/v1/usage"), 401, "invalid_api_key")
        usage = locked.get("/v1/usage", headers={"authorization": "Bearer s3cret"}).json()
        assert usage["access_level"] == "registered" and usage["limits"]["max_files_per_job"] == 100
        head = (b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.pdf"\r\n'
                b"Content-Type: application/pdf\r\n\r\n%PDF-")

        def chunked() -> Iterator[bytes]:  # no Content-Length: the body is stopped once it passes the limit
            yield head
            for _ in range(40):
                yield bytes(64 * 1024)

        _error(locked.post("/v1/tasks", params={"tier": "flash"}, content=chunked(),
                           headers={"authorization": "Bearer s3cret", "content-type": "multipart/form-data; boundary=B"}),
               413, "file_too_large")


def test_the_2x_form_refuses_query_options_it_would_otherwise_drop(client: httpx.Client, sample: bytes) -> None:
    response = client.post("/file_parse", params={"tier": "flash"}, files=[("files", ("a.pdf", sample, "application/pdf"))])
    assert response.status_code == 422 and "'tier'" in response.json()["detail"] and "/v1/file_parse" in response.json()["detail"]
    ok = client.post("/file_parse", data={"backend": "flash"}, files=[("files", ("a.pdf", sample, "application/pdf"))])
    assert ok.status_code == 200 and ok.json()["tier"] == "flash"


def test_the_retention_round_clears_v1_leftovers_when_the_service_starts(tmp_path: Path) -> None:
    stale = tmp_path / "data" / "v1" / "outputs" / ("0" * 32)  # the zip of a job deleted while the service was down
    stale.mkdir(parents=True)
    (stale / "0.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with TestClient(build_app(ServiceConfig(data_dir=tmp_path / "data", workers=1), ui=False)):
        deadline = time.monotonic() + 30
        while stale.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not stale.exists()


def test_stopping_the_service_closes_the_v1_store(tmp_path: Path) -> None:
    import os

    def open_v1_files() -> list[str]:
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:  # listdir's own descriptor, closed by now
                continue
            if link.startswith(str(tmp_path / "data" / "v1")):
                found.append(link)
        return found

    with TestClient(build_app(ServiceConfig(data_dir=tmp_path / "data", workers=1), ui=False)) as service:
        assert service.get("/v1/files/nope").status_code == 404  # the /v1 store is open now
        assert open_v1_files()
    assert open_v1_files() == []


def test_retention_takes_a_deleted_jobs_zip_and_the_bytes_of_expired_uploads(client: httpx.Client, data_dir: Path,
                                                                             tmp_path: Path) -> None:
    """Last in this file: the round below runs two hours ahead, so every upload made above has expired."""
    from mineru_fit.service.store import JobStore
    from mineru_fit.service.v1.retention import sweep
    from mineru_fit.service.v1.store import V1Store

    pdf = pdf_with_pages(tmp_path / "gone.pdf", ["text:Kept for an hour"]).read_bytes()
    task = client.post("/v1/tasks", params={"tier": "flash", "output_formats": ["zip"]},
                       files=[("files", ("gone.pdf", pdf, "application/pdf"))]).json()
    zip_id = _poll(client, task["status_url"])["files"][0]["output_files"]["zip"]["file_id"]
    created = client.post("/v1/uploads", json={"filename": "up.pdf", "bytes": len(pdf), "mime_type": "application/pdf"}).json()
    client.put(created["upload_url"], content=pdf)
    file_id = client.post(f"/v1/uploads/{created['id']}/complete").json()["file"]["id"]
    core_id = task["task_id"].removeprefix("job_")
    assert client.delete(f"/tasks/{core_id}").status_code == 204  # the core deletes the job, as its retention does
    store, jobs = V1Store(data_dir / "v1"), JobStore(data_dir / "jobs.sqlite3")
    blob, zipped = store.blob_path(hashlib.sha256(pdf).hexdigest()), store.outputs / core_id
    assert blob.is_file() and zipped.is_dir()
    try:
        sweep(store, jobs.ids, time.time() - 3600, now=time.time() + 2 * 3600)
    finally:
        store.close()
        jobs.close()
    assert not zipped.exists() and not blob.exists()
    _error(client.get(f"/v1/files/{zip_id}"), 404, "file_not_found")
    _error(client.post("/v1/parse/jobs", json={"files": [{"source": {"type": "file_id", "file_id": file_id}}],
                                               "tier": "flash"}), 404, "file_not_found")
