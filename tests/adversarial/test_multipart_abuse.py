"""Multipart abuse: bodies a form parser must survive. Each is a 4xx JSON answer (or a normal job), never a 500."""

from __future__ import annotations

from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


def _part(name: str, value: bytes, filename: str = "") -> bytes:
    extra = f'; filename="{filename}"' if filename else ""
    return f'--b\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode() + value + b"\r\n"


MULTIPART = "multipart/form-data; boundary=b"
CASES: dict[str, tuple[str, bytes]] = {
    "no boundary parameter": ("multipart/form-data", _part("files", PDF, "a.pdf") + b"--b--\r\n"),
    "boundary that never appears": ("multipart/form-data; boundary=zzz", _part("files", PDF, "a.pdf") + b"--b--\r\n"),
    "no closing boundary": (MULTIPART, _part("files", PDF, "a.pdf")),
    "empty body": (MULTIPART, b""),
    "garbage body": (MULTIPART, b"\x00\xff" * 5000),
    "5000 tiny fields": (MULTIPART, b"".join(_part(f"f{n}", b"x") for n in range(5000)) + b"--b--\r\n"),
    "2000 file parts": (MULTIPART, b"".join(_part("files", b"x", f"{n}.pdf") for n in range(2000)) + b"--b--\r\n"),
    "a 2 MB text field": (MULTIPART, _part("backend", b"a" * (2 * 1024 * 1024)) + b"--b--\r\n"),
    "files sent as text": (MULTIPART, _part("files", b"not a file") + b"--b--\r\n"),
    "part header 100 KB long": (MULTIPART, b"--b\r\nX-Junk: " + b"j" * 100_000 + b"\r\n" +
                                _part("files", PDF, "a.pdf")[4:] + b"--b--\r\n"),
    "part without Content-Disposition": (MULTIPART, b"--b\r\nContent-Type: application/pdf\r\n\r\n" + PDF +
                                         b"\r\n--b--\r\n"),
    "backend given twice": (MULTIPART, _part("backend", b"flash") + _part("backend", b"vlm") +
                            _part("files", PDF, "a.pdf") + b"--b--\r\n"),
    "urlencoded form with files": ("application/x-www-form-urlencoded", b"files=a.pdf&backend=flash"),
    "JSON instead of a form": ("application/json", b'{"files": ["a.pdf"], "backend": "flash"}'),
    "no content type": ("", _part("files", PDF, "a.pdf") + b"--b--\r\n"),
    "nested multipart/mixed": (MULTIPART, b'--b\r\nContent-Disposition: form-data; name="files"\r\n'
                                          b"Content-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n"
                                          b'Content-Disposition: file; filename="a.pdf"\r\n\r\n' + PDF +
                                          b"\r\n--c--\r\n--b--\r\n"),
    "start_page_id of 10^100": (MULTIPART, _part("start_page_id", b"1" + b"0" * 100) + _part("files", PDF, "a.pdf") +
                                b"--b--\r\n"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_multipart_abuse(service: tuple[str, Any], answered: Any, kind: str) -> None:
    base, _config = service
    content_type, body = CASES[kind]
    headers = {"content-type": content_type} if content_type else {}
    response = answered(httpx.post(f"{base}/tasks", content=body, headers=headers, timeout=30))
    assert response.status_code in (400, 413, 415, 422), (response.status_code, response.text[:300])
    assert len(response.content) < 10_000  # no echo of what was sent
    assert httpx.get(f"{base}/health", timeout=10).json()["status"] == "ok"
