"""Hostile file names in the multipart header: each upload is stored inside its own job's inputs/ under a safe
name, and the client's name is only ever shown back as a label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("reportlab")

NAMES = {
    "parent traversal": b'filename="../../../../tmp/evil.pdf"',
    "absolute path": b'filename="/etc/passwd"',
    "windows path": b'filename="C:\\\\Windows\\\\system32\\\\evil.pdf"',
    "dot dot only": b'filename=".."',
    "empty name": b'filename=""',
    "hidden dot file": b'filename=".bashrc"',
    "NUL inside": b'filename="a\x00b.pdf"',
    "percent-encoded traversal": b'filename="%2e%2e%2f%2e%2e%2fevil.pdf"',
    "RFC 5987 traversal": b"filename*=UTF-8''..%2F..%2Fevil.pdf",
    "right-to-left override": 'filename="\u202efdp.exe"'.encode(),
    "10 KB long": b'filename="' + b"x" * 10_000 + b'.pdf"',
    "windows device name": b'filename="CON.pdf"',
    "quote and semicolon": b'filename="a\\";b.pdf"',
    "only a slash": b'filename="/"',
}


def _form(disposition: bytes, pdf: bytes) -> bytes:
    return (b"--b\r\nContent-Disposition: form-data; name=\"files\"; " + disposition +
            b"\r\nContent-Type: application/pdf\r\n\r\n" + pdf + b"\r\n--b--\r\n")


@pytest.fixture(scope="module")
def pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from fixtures.documents import pdf_with_pages

    return pdf_with_pages(tmp_path_factory.mktemp("names") / "p.pdf", ["text:Named badly"]).read_bytes()


@pytest.mark.parametrize("kind", list(NAMES))
def test_hostile_name(service: tuple[str, Any], answered: Any, pdf: bytes, kind: str) -> None:
    base, config = service
    response = answered(httpx.post(f"{base}/tasks", content=_form(NAMES[kind], pdf), timeout=30,
                                   headers={"content-type": "multipart/form-data; boundary=b"}))
    if response.status_code != 202:  # a name the form parser itself refuses: a 4xx, never a job
        assert response.status_code in (400, 422), response.text
        return
    task = response.json()
    inputs = Path(config.data_dir) / "jobs" / task["task_id"] / "inputs"
    stored = [p.name for p in inputs.iterdir()]
    assert len(stored) == 1 and not stored[0].startswith(".") and len(stored[0]) <= 120, stored
    assert (inputs / stored[0]).resolve().parent == inputs.resolve()
    assert "/" not in task["files"][0]["name"] and ".." not in task["files"][0]["name"]
    assert not (Path("/tmp") / "evil.pdf").exists()
    httpx.delete(f"{base}{task['status_url']}", timeout=30)
