"""Malformed PDFs and bombs: each is refused with a 4xx before a job exists, or runs as a job that ends (any
status) within its time — and the service goes on answering."""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from typing import Any, Callable

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("reportlab")


def _pdf(*objects: bytes, root: int = 1) -> bytes:
    """A PDF with these objects (1-based) and a correct xref table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, root, xref)
    return bytes(out)


def _page_pdf(content: bytes, *, media_box: bytes = b"[0 0 612 792]", count: bytes = b"1", flate: bool = False) -> bytes:
    stream = zlib.compress(content, 9) if flate else content
    filters = b" /Filter /FlateDecode" if flate else b""
    return _pdf(b"<< /Type /Catalog /Pages 2 0 R >>",
                b"<< /Type /Pages /Kids [3 0 R] /Count " + count + b" >>",
                b"<< /Type /Page /Parent 2 0 R /MediaBox " + media_box + b" /Contents 4 0 R "
                b"/Resources << /Font << /F1 5 0 R >> >> >>",
                b"<< /Length %d%s >>\nstream\n" % (len(stream), filters) + stream + b"\nendstream",
                b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")


TEXT = b"BT /F1 12 Tf 72 700 Td (A hostile but valid page) Tj ET"


def _png_header_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\x00" * 1000)  # a few rows of the claimed size: decoding it all would be GBs
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _jpeg_header_bomb() -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 65500, 65500, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def _zip_bomb() -> bytes:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.pdf", b"%PDF-1.7\n" + b"\0" * (50 * 1024 * 1024))
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(8):
            archive.writestr(f"layer{n}.zip", inner.getvalue())
    return outer.getvalue()


CASES: dict[str, Callable[[], bytes]] = {
    "header only": lambda: b"%PDF-1.7\n",
    "truncated in the middle": lambda: _page_pdf(TEXT)[:200],
    "no xref and no trailer": lambda: _page_pdf(TEXT).split(b"xref")[0],
    "page tree that contains itself": lambda: _pdf(b"<< /Type /Catalog /Pages 2 0 R >>",
                                                  b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
                                                  b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"),
    "page count that lies (2^31-1)": lambda: _page_pdf(TEXT, count=b"2147483647"),
    "media box a billion points wide": lambda: _page_pdf(TEXT, media_box=b"[0 0 1000000000 1000000000]"),
    "negative media box": lambda: _page_pdf(TEXT, media_box=b"[0 0 -612 -792]"),
    "flate bomb (64 MB page stream in 64 KB)": lambda: _page_pdf(TEXT + b" " * (64 * 1024 * 1024), flate=True),
    "stream length that lies": lambda: _page_pdf(TEXT).replace(b"/Length 53", b"/Length 999999"),
    "PNG claiming 100000x100000 pixels": lambda: _png_header_bomb(100_000, 100_000),
    "JPEG claiming 65500x65500 pixels": _jpeg_header_bomb,
    "zip bomb named .pdf": _zip_bomb,
    "PDF header on a zip (polyglot)": lambda: b"%PDF-1.7\n" + _zip_bomb()[:4096],
    "NUL bytes only": lambda: b"\0" * 4096,
}


@pytest.mark.parametrize("kind", list(CASES))
def test_hostile_document(service: tuple[str, Any], answered: Any, kind: str) -> None:
    base, config = service
    data = CASES[kind]()
    with httpx.Client(base_url=base, timeout=60) as api:
        response = answered(api.post("/tasks", files=[("files", ("doc.pdf", data, "application/pdf"))]))
        if response.status_code == 202:
            url = response.json()["status_url"]
            deadline = time.monotonic() + config.job_timeout_s + 30
            while (status := api.get(url).json())["status"] not in ("succeeded", "partial", "failed"):
                assert time.monotonic() < deadline, status
                time.sleep(0.2)
            answered(api.get(response.json()["result_url"]))
            api.delete(url)
        else:
            assert response.status_code in (413, 415, 422), response.text
        assert api.get("/health").json()["status"] == "ok"
