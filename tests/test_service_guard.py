"""The service's door against browsers and careless clients: Host allow-list and same-origin POSTs (DNS rebinding,
cross-site forms), 422s that do not echo the upload, half-sent bodies answered 408 and closed, nested JSON a 400,
and API docs that load no CDN."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

from fastapi.testclient import TestClient  # noqa: E402
from fixtures.documents import pdf_with_pages  # noqa: E402
from fixtures.service import running_service  # noqa: E402

from mineru_fit.cli.service_setup import ServiceArgs, setup_service  # noqa: E402
from mineru_fit.service import ServiceConfig  # noqa: E402
from mineru_fit.service.api import create_app  # noqa: E402
from mineru_fit.service.core import ServiceCore  # noqa: E402
from mineru_fit.settings import load_settings  # noqa: E402

LOCAL = ("localhost", "127.0.0.1", "::1")


@pytest.fixture(scope="module")
def pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return pdf_with_pages(tmp_path_factory.mktemp("docs") / "one.pdf", ["text:A page heading"]).read_bytes()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    config = ServiceConfig(data_dir=tmp_path_factory.mktemp("data"), workers=1, allowed_hosts=LOCAL)
    with TestClient(create_app(ServiceCore(config)), base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


def upload(pdf: bytes) -> list:
    return [("files", ("one.pdf", pdf, "application/pdf"))]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io:8000", "localhost.evil.example"])
def test_a_host_header_outside_the_allow_list_is_refused(client: TestClient, pdf: bytes, host: str) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name: the Host header gives it away.
    for response in (client.get("/health", headers={"host": host}),
                     client.post("/tasks", files=upload(pdf), headers={"host": host})):
        assert response.status_code == 403, response.text
        assert "Host" in response.json()["detail"] and "--allowed-host" in response.json()["detail"]


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST", "127.0.0.1"])
def test_local_host_names_are_served(client: TestClient, host: str) -> None:
    assert client.get("/health", headers={"host": host}).status_code == 200


def test_a_cross_origin_post_is_refused_and_a_same_origin_or_plain_one_accepted(client: TestClient, pdf: bytes) -> None:
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8000"):
        refused = client.post("/tasks", files=upload(pdf), headers={"origin": origin})
        assert refused.status_code == 403 and "cross-origin" in refused.json()["detail"], origin
        assert client.delete("/tasks/" + "0" * 32, headers={"origin": origin}).status_code == 403
    same = client.post("/tasks", files=upload(pdf), headers={"origin": "http://127.0.0.1:8000"})
    plain = client.post("/tasks", files=upload(pdf))  # curl, requests, MinerU's client: no Origin at all
    assert same.status_code == 202 and plain.status_code == 202
    assert client.get("/health", headers={"origin": "http://evil.example"}).status_code == 200  # reads are not refused


def test_the_cli_allows_local_names_and_the_bind_address_by_default(tmp_path: Path) -> None:
    settings = load_settings()

    def hosts(**args) -> object:
        return setup_service(ServiceArgs(server="http://127.0.0.1:1", data_dir=tmp_path, **args), settings).config.allowed_hosts

    assert set(hosts()) == set(LOCAL)  # type: ignore[arg-type]
    assert set(hosts(host="192.0.2.7")) == {*LOCAL, "192.0.2.7"}  # type: ignore[arg-type]
    assert set(hosts(allowed_hosts=("parse.internal",))) == {*LOCAL, "parse.internal"}  # type: ignore[arg-type]
    assert hosts(host="0.0.0.0") is None and hosts(allowed_hosts=("*",)) is None  # every interface: any name


def test_a_422_does_not_echo_what_was_sent(client: TestClient, pdf: bytes) -> None:
    secret = "S3CRET-" + "x" * 200_000
    for data, files in (({"backend": "auto", "unknown_field": secret}, upload(pdf)),
                        ({"files": secret}, None), ({"start_page_id": secret}, upload(pdf))):
        response = client.post("/file_parse", data=data, files=files)
        assert response.status_code == 422, response.text
        assert "S3CRET" not in response.text and len(response.content) < 2000
        assert response.json()["detail"][0]["msg"]


def test_deeply_nested_json_is_a_400_not_a_500(client: TestClient) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 30_000 + b"1" + b"}" * 30_000):
        for path in ("/tasks", "/file_parse", "/health", "/tasks/" + "0" * 32):
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, (path, response.status_code, response.text[:200])
            assert "nest" in response.json()["detail"]
    huge = client.post("/tasks", content=b"[" + b"1," * 200_000 + b"1]", headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "JSON body" in huge.json()["detail"]
    assert client.get("/health").status_code == 200


def test_docs_load_no_cdn(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn." not in html and "https://" not in html.split("<body")[0], page
        for asset in [part.split('"')[0] for part in html.split('src="')[1:]] + \
                     [part.split('"')[0] for part in html.split('href="')[1:] if part.endswith(".css", 0, part.find('"'))]:
            assert asset.startswith("/"), asset
            assert client.get(asset).status_code == 200, asset


def _half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"files\"; "
                 b"filename=\"a.pdf\"\r\n\r\n%PDF-1.4\n")
    return sock


def test_half_sent_uploads_are_answered_408_and_closed(tmp_path: Path) -> None:
    config = ServiceConfig(data_dir=tmp_path / "data", workers=1, body_timeout_s=1.0)
    with running_service(config) as base:
        port = int(base.rsplit(":", 1)[1])
        started = time.monotonic()
        socks = [_half_sent(port) for _ in range(20)]
        try:
            for sock in socks:
                sock.settimeout(15)
                answer = b""
                while chunk := sock.recv(65536):  # the server closes the connection after its answer
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                assert b"sent nothing" in answer
        finally:
            for sock in socks:
                sock.close()
        assert time.monotonic() - started < 10


def test_an_unforeseen_error_is_a_json_500_and_a_disk_error_a_503_never_a_traceback(tmp_path: Path) -> None:
    app = create_app(ServiceCore(ServiceConfig(data_dir=tmp_path / "data", workers=1)))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("/srv/secret/path exploded")

    @app.get("/disk")
    async def disk() -> None:
        raise OSError(30, "Read-only file system", "/srv/secret/jobs.sqlite3")

    with TestClient(app, raise_server_exceptions=False) as client:
        boom_answer, disk_answer = client.get("/boom"), client.get("/disk")
    assert boom_answer.status_code == 500 and disk_answer.status_code == 503
    for answer in (boom_answer, disk_answer):
        assert answer.headers["content-type"] == "application/json" and "secret" not in answer.text
    assert "Read-only file system" in disk_answer.json()["detail"] and disk_answer.headers["retry-after"]
