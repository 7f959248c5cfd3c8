"""The parse API on a real uvicorn over loopback: 50 uploads at once all come back right, and a body with no
Content-Length cannot grow past the limit."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

import httpx  # noqa: E402
from fixtures.documents import pdf_with_pages  # noqa: E402
from fixtures.service import running_service  # noqa: E402

from mineru_fit.parsing.sample import HEADINGS, TABLE, write_sample_pdf  # noqa: E402
from mineru_fit.service import Limits, ServiceConfig  # noqa: E402
from mineru_fit.units import MIB  # noqa: E402

UPLOADS = 50


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = ServiceConfig(data_dir=tmp_path_factory.mktemp("data"), workers=4,
                           limits=Limits(max_upload_bytes=4 * MIB))
    with running_service(config) as url:
        yield url


async def _one(api: httpx.AsyncClient, n: int, pdf: bytes, marker: bytes) -> tuple[int, dict[str, Any]]:
    """Odd uploads wait on /file_parse; even ones go through /tasks and poll."""
    name = f"doc{n}.pdf"
    files = [("files", (name, pdf, "application/pdf")), ("files", (f"mark{n}.pdf", marker, "application/pdf"))]
    data = {"return_content_list": "true"}
    if n % 2:
        response = await api.post("/file_parse", files=files, data=data)
        assert response.status_code == 200, response.text
        return n, response.json()
    response = await api.post("/tasks", files=files, data=data)
    assert response.status_code == 202, response.text
    result_url = response.json()["result_url"]
    while True:
        response = await api.get(result_url)
        if response.status_code != 409:
            assert response.status_code == 200, response.text
            return n, response.json()
        await asyncio.sleep(0.2)


def test_fifty_concurrent_uploads_all_complete_with_their_own_results(base: str, tmp_path: Path) -> None:
    pdf = write_sample_pdf(tmp_path / "sample.pdf").read_bytes()
    # A second, small file per upload whose text names the upload: no result may carry another's file.
    markers = [pdf_with_pages(tmp_path / f"m{n}.pdf", [f"text:Upload number {n}"]).read_bytes() for n in range(UPLOADS)]

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        limits = httpx.Limits(max_connections=UPLOADS)
        async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as api:
            return await asyncio.gather(*(_one(api, n, pdf, markers[n]) for n in range(UPLOADS)))

    started = time.monotonic()
    bodies = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert len({body["task_id"] for _, body in bodies}) == UPLOADS
    for n, body in bodies:
        assert body["status"] == "succeeded"
        doc, mark = body["results"][f"doc{n}"], body["results"][f"mark{n}"]
        assert f"## {HEADINGS[0]}" in doc["md_content"]
        table = next(i for i in json.loads(doc["content_list"]) if i["type"] == "table")
        assert f"<td>{TABLE[3][0]}</td>" in table["table_body"]
        assert f"Upload number {n}" in mark["md_content"]
    metrics = httpx.get(f"{base}/metrics").text
    assert f'mineru_fit_api_jobs_finished_total{{status="succeeded"}} {float(UPLOADS)}' in metrics
    print(f"{UPLOADS} uploads (4 pages each) in {elapsed:.1f} s with 4 workers")


def test_a_chunked_upload_is_cut_off_at_the_limit(base: str) -> None:
    boundary = "xyzzy"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.pdf\"\r\n"
               "Content-Type: application/pdf\r\n\r\n%PDF-1.4\n").encode()
        for _ in range(12):  # 12 MiB against a 4 MiB limit, without a Content-Length
            yield b"0" * MIB
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(f"{base}/tasks", content=body(), timeout=60,
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    assert httpx.get(f"{base}/health").json()["status"] == "ok"
