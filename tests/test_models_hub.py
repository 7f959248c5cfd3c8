"""download/where/list_models through the real huggingface_hub client, against a local fake hub."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from fixtures.fake_hub import COMMIT, FakeHub
from fixtures.tiny_qwen2vl import build_tiny_qwen2vl
from mineru_fit.errors import HubError, MissingExtraError, ModelNotFoundError, UsageError
from mineru_fit.models import download, list_models, load_spec, where
from mineru_fit.settings import ModelSource

REPO = "opendatalab/MinerU2.5-2509-1.2B"


@pytest.fixture(autouse=True)
def isolated_hub_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "MODELSCOPE_DOMAIN"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def hub(tiny, tmp_path, monkeypatch):
    empty = tmp_path / "empty-repo"
    empty.mkdir()
    (empty / "README.md").write_text("no weights here\n")
    with FakeHub({REPO: tiny, "someone/empty": empty}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_into_the_hf_cache_then_found_and_loaded(hub, tiny, tmp_path):
    assert where(REPO) is None
    path = download(REPO, ModelSource.huggingface, timeout_s=5)
    assert path == tmp_path / "hf-cache" / "models--opendatalab--MinerU2.5-2509-1.2B" / "snapshots" / COMMIT
    assert (path / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()
    # The hub calls snapshot_download makes: repo info, tree listing, then per-file HEAD + GET.
    assert f"GET /api/models/{REPO}/revision/main" in hub.requests
    assert f"GET /api/models/{REPO}/tree/{COMMIT}" in hub.requests
    assert f"GET /{REPO}/resolve/{COMMIT}/model.safetensors" in hub.requests
    assert where("OpenDataLab/MinerU2.5-2509-1.2B") == path
    spec = load_spec(REPO)
    assert spec.tensors_from_header and spec.source == str(path)
    assert [s.path for s in list_models() if s.model.hf_id == REPO] == [path]


def test_download_into_a_folder_or_the_models_dir(hub, tmp_path):
    dest = download(REPO, "huggingface", dest=tmp_path / "here", timeout_s=5)
    assert dest == (tmp_path / "here").resolve() and (dest / "config.json").is_file()
    mine = download("MinerU2.5-2509-1.2B", "huggingface", timeout_s=5, models_dir=tmp_path / "models")
    assert mine == (tmp_path / "models" / "MinerU2.5-2509-1.2B").resolve()
    assert where(REPO, models_dir=tmp_path / "models") == tmp_path / "models" / "MinerU2.5-2509-1.2B"


def test_offline_with_nothing_cached_says_so(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError) as info:
        download(REPO, "huggingface", timeout_s=5)
    assert "HF_HUB_OFFLINE" in str(info.value) and "\n" not in str(info.value)
    assert hub.requests == []  # offline means no request at all


def test_offline_with_a_cached_copy_returns_it(hub, monkeypatch):
    path = download(REPO, "huggingface", timeout_s=5)
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download(REPO, "huggingface", timeout_s=5) == path
    assert hub.requests == []


def test_unknown_repo_is_a_hub_error(hub):
    with pytest.raises(HubError, match="someone/nothing was not found on http://127.0.0.1"):
        download("someone/nothing", "huggingface", timeout_s=5)


def test_repo_without_weights_is_a_hub_error(hub):
    with pytest.raises(HubError, match="no config.json and safetensors"):
        download("someone/empty", "huggingface", timeout_s=5)


def test_closed_port_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(HubError) as info:
        download(REPO, "huggingface", timeout_s=5)
    assert time.monotonic() - start < 3
    message = str(info.value)
    assert message.startswith("cannot reach http://127.0.0.1:") and "\n" not in message
    assert "--source local" in message


def test_silent_server_fails_within_the_timeout(monkeypatch):
    # Accepts TCP connections (the kernel's backlog) but never answers: a hung hub or proxy.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(HubError, match=r"no answer within 0.5 s"):
            download(REPO, "huggingface", timeout_s=0.5)
        assert time.monotonic() - start < 3


def test_bad_endpoint_url_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "not a url")
    with pytest.raises(UsageError, match="HF_ENDPOINT"):
        download(REPO, "huggingface", timeout_s=1)


def test_modelscope_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope.hub.snapshot_download", None)  # import now fails
    with pytest.raises(MissingExtraError) as info:
        download(REPO, ModelSource.modelscope, timeout_s=1)
    assert "pip install 'mineru-fit[modelscope]'" in str(info.value)


def test_modelscope_unreachable_fails_fast(monkeypatch):
    pytest.importorskip("modelscope")
    monkeypatch.setenv("MODELSCOPE_DOMAIN", f"127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(HubError, match="cannot reach https://127.0.0.1"):
        download(REPO, "modelscope", timeout_s=2)
    assert time.monotonic() - start < 5


def test_local_source(tiny, tmp_path):
    assert download("ignored", ModelSource.local, dest=tiny) == tiny.resolve()
    assert download(str(tiny), "local") == tiny.resolve()
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        download("x", "local", dest=tmp_path / "absent")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        download("x", "local", dest=tmp_path)


def test_bad_source_or_id_is_a_usage_error():
    with pytest.raises(UsageError, match="accepted values: huggingface, modelscope, local"):
        download(REPO, "ftp")
    with pytest.raises(UsageError, match="not a hub id"):
        download("just-a-name", "huggingface")


def test_list_models_reports_absent_models():
    rows = list_models()
    assert [r.model.name for r in rows] == ["MinerU2.5-2509-1.2B", "MinerU2.5-Pro-2604-1.2B", "MinerU2.5-Pro-2605-1.2B"]
    assert not any(r.present for r in rows)
