"""MinerU 4's own clients (mineru==4.0.12, base install, no torch) against mineru-fit: `mineru-kit parse
--remote-url`, `MinerUApiParser`, the web UI's first requests, and `mineru-kit router` over two mineru-fit
workers — flash on PDFs made here, and the standard tier on the tiny random Qwen2-VL (its blocks are noise:
the path is real, the text is not)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
pytest.importorskip("mineru", reason="the MinerU 4 clients come with the dev extra (mineru==4.0.12)")

import httpx  # noqa: E402

from fixtures.documents import pdf_with_pages  # noqa: E402
from fixtures.servers import free_port, wait_healthy  # noqa: E402
from fixtures.service import api_process, running_service, service_env  # noqa: E402
from mineru_fit.parsing.sample import write_sample_pdf  # noqa: E402

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, subprocess.Popen[str]]]]:
    """Two `mineru-fit api` processes (no model here: flash only), as a user starts them."""
    root = tmp_path_factory.mktemp("workers")
    with api_process(root / "a", "--workers", "1") as first, api_process(root / "b", "--workers", "1") as second:
        yield [first, second]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_pdf(tmp_path_factory.mktemp("in") / "sample.pdf")


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # a client that trusts the environment must still reach loopback


def _uploaded(base: str, name: str) -> bool:
    return name in [f["filename"] for f in httpx.get(f"{base}/v1/files", params={"purpose": "parse"}).json()["data"]]


@pytest.mark.parametrize("remote", [False, True], ids=["loopback", "non-loopback"])
def test_mineru_api_parser_uploads_and_reads_middle_json(workers: list, sample: Path, tmp_path: Path,
                                                         remote: bool) -> None:
    from mineru.parser import MinerUApiParser

    base = workers[0][0]
    pdf = tmp_path / f"{'remote' if remote else 'local'}.pdf"
    pdf.write_bytes(sample.read_bytes())
    parser = MinerUApiParser(api_url=base, tier="flash")
    # The client picks its path by the URL's host: a loopback/private host first asks /v1/health whether the
    # server reads local paths (we never do), any other host uploads straight away, trusting proxy settings.
    assert parser._local is True
    if remote:
        parser._local, parser._trust_env = False, True
    result = parser.parse(pdf, page_range="1-2")
    assert [p.page_idx for p in result.pages] == [0, 1]
    markdown = result.markdown()
    assert markdown.startswith("# mineru-fit sample document") and "| basic | bf16 | 8192 | 8 |" in markdown
    assert _uploaded(base, pdf.name)


def test_mineru_kit_parse_remote_url_writes_the_markdown(workers: list, sample: Path, tmp_path: Path) -> None:
    # (mineru-kit asks the server the same way for every -f and writes the format itself: one run covers them)
    md = subprocess.run([str(BIN / "mineru-kit"), "parse", str(sample), "-o", str(tmp_path / "out.md"),
                         "--remote-url", workers[1][0], "--tier", "flash"], capture_output=True, text=True,
                        env=service_env(), timeout=300)
    assert md.returncode == 0, md.stdout + md.stderr
    markdown = (tmp_path / "out.md").read_text()
    assert markdown.startswith("# mineru-fit sample document") and "| basic | bf16 | 8192 | 8 |" in markdown


def test_the_web_ui_discovers_the_server_and_parses_with_images(workers: list, sample: Path) -> None:
    from mineru.kit.gradio.client import V1ArtifactClient

    client = V1ArtifactClient(api_url=workers[0][0])
    capabilities = asyncio.run(client.discover())
    assert capabilities.tiers == ("flash",) and "zip" in capabilities.output_formats
    result = asyncio.run(client.parse_file(sample, tier="flash", page_range=""))
    assert len(result.pages) == 3
    assert "data:image/jpeg;base64," in str(result.middle_json.model_dump())  # the zip's images/ came back inline


def test_mineru_router_over_two_workers_routes_and_survives_one_dying(workers: list, sample: Path,
                                                                      tmp_path: Path) -> None:
    from mineru.parser import MinerUApiParser

    port = free_port()
    log = open(tmp_path / "router.log", "w")
    router = subprocess.Popen([str(BIN / "mineru-kit"), "router", "--port", str(port), "--local-gpus", "none",
                               "--upstream-url", workers[0][0], "--upstream-url", workers[1][0]],
                              stdout=log, stderr=subprocess.STDOUT, text=True, env=service_env(), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base + "/v1", proc=router)
        assert [t["id"] for t in httpx.get(f"{base}/v1/tiers").json()["data"]] == ["flash"]
        parser = MinerUApiParser(api_url=base, tier="flash")
        for n in range(2):  # the router alternates between equally loaded workers
            pdf = tmp_path / f"routed{n}.pdf"
            pdf.write_bytes(sample.read_bytes())
            assert parser.parse(pdf, page_range="1").pages[0].page_idx == 0
        assert _uploaded(workers[0][0], "routed0.pdf") != _uploaded(workers[0][0], "routed1.pdf")
        dead, proc = workers[0]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(3)  # the router polls /v1/health, /v1/tiers and /v1/models every 2 s
        assert httpx.get(f"{base}/v1/health").json()["status"] == "ok"
        survivor = tmp_path / "after.pdf"
        survivor.write_bytes(sample.read_bytes())
        assert parser.parse(survivor, page_range="1").pages[0].page_idx == 0
        assert _uploaded(workers[1][0], "after.pdf")
    finally:
        os.killpg(router.pid, signal.SIGTERM)
        try:
            router.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(router.pid, signal.SIGKILL)
            router.wait()
        log.close()


def test_the_standard_tier_runs_mineru25_on_the_tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from fixtures.tiny_qwen2vl import build_tiny_qwen2vl
    from mineru.parser import MinerUApiParser

    from mineru_fit.engines.builtin.options import BuiltinOptions
    from mineru_fit.service import ServiceConfig
    from mineru_fit.service.engine import EngineHandle, EngineSpec

    monkeypatch.setenv("MINERU_FIT_STATE_DIR", str(tmp_path / "state"))
    model = build_tiny_qwen2vl(tmp_path / "tiny")
    options = BuiltinOptions(model=str(model), device="cpu", dtype="float32", max_model_len=2048, max_new_tokens=12,
                             max_batch_size=4, served_model_name="tiny")
    handle = EngineHandle(EngineSpec("builtin", "test: the tiny model in this process", builtin=options))
    info = handle.start()
    try:
        with running_service(ServiceConfig(data_dir=tmp_path / "data", workers=1, engine=info)) as base:
            tiers = httpx.get(f"{base}/v1/tiers").json()["data"]
            assert [t["id"] for t in tiers] == ["flash", "standard"] and "MinerU2.5" in tiers[1]["description"]
            pdf = pdf_with_pages(tmp_path / "one.pdf", ["text:A page for the model"])
            result = MinerUApiParser(api_url=base).parse(pdf)  # no tier: MinerU's default, standard
            assert [p.page_idx for p in result.pages] == [0]
            assert result.middle_json.extensions["mineru_fit"]["tier"] == "vlm"  # said, not hidden
            job = httpx.get(f"{base}/v1/parse/jobs").json()["data"][0]
            detail = httpx.get(f"{base}/v1/parse/jobs/{job['job_id']}").json()
            assert detail["tier"] == "standard" and detail["files"][0]["status"] == "completed"
            assert detail["files"][0]["parse"]["model_used"] == "tiny"  # the model that ran, by its served name
    finally:
        handle.stop()
