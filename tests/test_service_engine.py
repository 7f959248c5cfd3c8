"""The service's engine: the built-in one loaded in the service's process serves vlm jobs (a tiny random
Qwen2-VL on the CPU: blocks are noise, the path is real); SGLang under the supervisor (the fake engine)
is started by `mineru-fit api` and gone when it stops."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("mineru_vl_utils")
pytest.importorskip("reportlab")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from fixtures.documents import pdf_with_pages  # noqa: E402
from fixtures.servers import free_port  # noqa: E402
from fixtures.service import api_process  # noqa: E402
from fixtures.tiny_qwen2vl import build_tiny_qwen2vl  # noqa: E402

from mineru_fit.engines.builtin.options import BuiltinOptions  # noqa: E402
from mineru_fit.engines.process import healthy  # noqa: E402
from mineru_fit.service import ServiceConfig  # noqa: E402
from mineru_fit.service.api import create_app  # noqa: E402
from mineru_fit.service.core import ServiceCore  # noqa: E402
from mineru_fit.service.engine import EngineHandle, EngineSpec  # noqa: E402

FAKE = Path(__file__).parent / "fake_engine" / "fake_engine.py"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_builtin_engine_in_this_process_serves_the_vlm_tier(model_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINERU_FIT_STATE_DIR", str(tmp_path / "state"))
    options = BuiltinOptions(model=str(model_dir), device="cpu", dtype="float32", max_model_len=2048,
                             max_new_tokens=12, max_batch_size=4, served_model_name="tiny")
    handle = EngineHandle(EngineSpec("builtin", "test: the tiny model in this process", builtin=options))
    info = handle.start()
    try:
        assert info.kind == "builtin" and info.url is not None and info.url.startswith("http://127.0.0.1:")
        records = list((tmp_path / "state" / "runs").glob("builtin-*.json"))
        assert len(records) == 1 and json.loads(records[0].read_text())["pid"] == os.getpid()  # the monitor finds it
        pdf = pdf_with_pages(tmp_path / "one.pdf", ["text:A page for the model"]).read_bytes()
        core = ServiceCore(ServiceConfig(data_dir=tmp_path / "data", workers=2, engine=info))
        with TestClient(create_app(core)) as client:
            assert client.get("/health").json()["tiers"] == ["vlm", "flash"]
            response = client.post("/file_parse", files=[("files", ("one.pdf", pdf, "application/pdf"))],
                                   data={"backend": "vlm-http-client"})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["tier"] == "vlm" and body["status"] == "succeeded"
            pages = json.loads((core.job_dir(body["task_id"]) / "output" / "one" / "vlm" / "one_pages.json").read_text())
            assert [(p["tier"], p["ok"]) for p in pages] == [("vlm", True)]
            # auto picks the engine too; flash stays available on request.
            auto = client.post("/tasks", files=[("files", ("one.pdf", pdf, "application/pdf"))]).json()
            assert auto["tier"] == "vlm"
            flash = client.post("/file_parse", files=[("files", ("one.pdf", pdf, "application/pdf"))],
                                data={"backend": "pipeline"}).json()
            assert flash["tier"] == "flash" and "A page for the model" in flash["results"]["one"]["md_content"]
    finally:
        handle.stop()
    assert not healthy(f"{info.url}/health", timeout_s=1.0)
    assert not list((tmp_path / "state" / "runs").glob("builtin-*.json"))


def test_start_api_runs_sglang_under_the_supervisor_and_stops_it_on_exit(model_dir: Path, tmp_path: Path) -> None:
    engine_port = free_port()
    env = {"MINERU_FIT_STATE_DIR": str(tmp_path / "state"), "MINERU_FIT_SGLANG_EXECUTABLE": f"{sys.executable} {FAKE}",
           "FAKE_ENGINE_PIDFILE": str(tmp_path / "pids.json"), "FAKE_ENGINE_GRANDCHILD": "1"}
    with api_process(tmp_path / "data", "--engine", "sglang", "--vram", "8", "--model", str(model_dir),
                     "--engine-port", str(engine_port), **env) as (base, proc):
        health = httpx.get(f"{base}/health").json()
        assert health["engine"] == "sglang" and health["tiers"] == ["vlm", "flash"]
        assert healthy(f"http://127.0.0.1:{engine_port}/health")
        pids = json.loads((tmp_path / "pids.json").read_text())
        assert list((tmp_path / "state" / "runs").glob("sglang-*.json"))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) in (0, 130)  # uvicorn re-raises the SIGINT it handled: 130, as a shell expects
    deadline = time.monotonic() + 10
    engine_pids = [pids["leader"], pids["grandchild"]]
    while not all(_gone(pid) for pid in engine_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in engine_pids), "the engine (and its worker) must not outlive the service"
    assert not list((tmp_path / "state" / "runs").glob("*.json"))
