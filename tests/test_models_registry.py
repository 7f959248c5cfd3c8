"""load_spec / default_spec: the shipped MinerU2.5 numbers, local folders, known ids, fast and torch-free."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.tiny_qwen2vl import build_tiny_qwen2vl
from mineru_fit.errors import ModelNotFoundError, ModelSpecError
from mineru_fit.models import KNOWN_MODELS, TensorRole, default_spec, load_spec, where
from mineru_fit.units import GIB


@pytest.fixture(autouse=True)
def empty_caches(tmp_path, monkeypatch):
    """Point every hub cache at empty folders so the machine's own caches never leak in."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny"))


def test_shipped_spec_matches_vllm_weight_load_and_published_kv():
    spec = default_spec()
    # vLLM's public log for MinerU2.5: "Model loading took 2.16 GiB".
    assert spec.weight_bytes == pytest.approx(2.16 * GIB, rel=0.01)
    assert spec.param_count == pytest.approx(1.156e9, rel=0.001)
    assert not any(t.name.startswith("lm_head") for t in spec.tensors)  # tied embeddings
    assert spec.kv_bytes_per_token(2) == 2 * 24 * 2 * 64 * 2 == 12288
    assert spec.kv_bytes_per_token(1) == 6144
    assert spec.bytes_by_dtype() == {"BF16": spec.weight_bytes}
    assert (spec.image.min_pixels, spec.image.max_pixels) == (50176, 1605632)
    assert spec.source == "package" and spec.tensors_from_header is False
    assert spec.name == "opendatalab/MinerU2.5-2509-1.2B"


def test_default_spec_is_cached_and_is_what_none_loads():
    assert default_spec() is default_spec()
    assert load_spec() is default_spec()
    assert load_spec(None) is default_spec()


def test_spec_from_a_saved_tiny_model_has_exactly_its_tensor_bytes(tiny):
    safetensors = pytest.importorskip("safetensors")
    spec = load_spec(tiny)
    with safetensors.safe_open(str(tiny / "model.safetensors"), "pt") as f:
        expected = sum(f.get_tensor(name).numel() * f.get_tensor(name).element_size() for name in f.keys())
    header_bytes = int.from_bytes((tiny / "model.safetensors").read_bytes()[:8], "little")
    assert spec.tensors_from_header is True
    assert spec.weight_bytes == expected == (tiny / "model.safetensors").stat().st_size - 8 - header_bytes
    assert spec.source == str(tiny)
    assert {t.role for t in spec.tensors} >= {TensorRole.linear, TensorRole.vision_linear, TensorRole.embedding}
    assert TensorRole.other not in {t.role for t in spec.tensors}
    assert spec.kv_bytes_per_token(2) == 2 * 2 * 2 * 16 * 2


def test_folder_without_weights_derives_the_same_bytes(tmp_path, tiny):
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(tiny / name, tmp_path / name)
    derived = load_spec(tmp_path)
    assert derived.tensors_from_header is False
    assert derived.weight_bytes == load_spec(tiny).weight_bytes


def test_folder_with_a_corrupt_header_is_a_spec_error(tmp_path, tiny):
    shutil.copy(tiny / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelSpecError, match="model.safetensors"):
        load_spec(tmp_path)


def test_folder_without_config_and_file_paths_are_spec_errors(tmp_path):
    with pytest.raises(ModelSpecError, match="no config.json"):
        load_spec(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelSpecError, match="is a file"):
        load_spec(tmp_path / "config.json")


@pytest.mark.parametrize("model", [m.hf_id for m in KNOWN_MODELS] + [m.modelscope_id for m in KNOWN_MODELS] + ["mineru2.5-pro-2604-1.2b"])
def test_known_ids_fall_back_to_the_shipped_architecture(model):
    spec = load_spec(model)
    assert spec.source == "package"
    assert spec.weight_bytes == default_spec().weight_bytes
    assert spec.name.startswith("opendatalab/") and spec.name.lower().endswith(model.lower().rsplit("/", 1)[-1])


def _fake_hf_cache(cache: Path, repo_id: str, model_dir: Path) -> Path:
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / ("a" * 40)
    shutil.copytree(model_dir, snapshot)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("a" * 40)
    return snapshot


def test_known_id_uses_the_downloaded_copy_in_the_hf_cache(tmp_path, tiny):
    snapshot = _fake_hf_cache(tmp_path / "hf-cache", "opendatalab/MinerU2.5-Pro-2605-1.2B", tiny)
    assert where("OpenDataLab/MinerU2.5-Pro-2605-1.2B") == snapshot
    spec = load_spec("opendatalab/MinerU2.5-Pro-2605-1.2B")
    assert spec.tensors_from_header and spec.source == str(snapshot)
    assert spec.name == "opendatalab/MinerU2.5-Pro-2605-1.2B"


def test_known_id_uses_the_modelscope_cache_and_models_dir(tmp_path, tiny):
    ms = tmp_path / "ms-cache" / "models" / "OpenDataLab" / "MinerU2___5-2509-1___2B"
    shutil.copytree(tiny, ms)
    assert where("opendatalab/MinerU2.5-2509-1.2B") == ms
    mine = tmp_path / "mine" / "MinerU2.5-2509-1.2B"
    shutil.copytree(tiny, mine)
    assert where("opendatalab/MinerU2.5-2509-1.2B", models_dir=tmp_path / "mine") == mine  # models_dir first
    assert load_spec("MinerU2.5-2509-1.2B", models_dir=tmp_path / "mine").source == str(mine)


def test_incomplete_download_is_not_found(tmp_path, tiny):
    snapshot = _fake_hf_cache(tmp_path / "hf-cache", "opendatalab/MinerU2.5-2509-1.2B", tiny)
    (snapshot / "model.safetensors").unlink()
    assert where("opendatalab/MinerU2.5-2509-1.2B") is None
    assert load_spec("opendatalab/MinerU2.5-2509-1.2B").source == "package"


def test_unknown_model_names_the_download_command(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        load_spec("someone/SomeOther-7B")
    message = str(info.value)
    assert "mineru-fit models download" in message and "\n" not in message
    with pytest.raises(ModelNotFoundError):
        load_spec(tmp_path / "no-such-folder")


def test_an_unknown_hub_id_in_the_hf_cache_is_found(tmp_path, tiny):
    _fake_hf_cache(tmp_path / "hf-cache", "someone/Tiny-Qwen2VL", tiny)
    spec = load_spec("someone/Tiny-Qwen2VL")
    assert spec.tensors_from_header and spec.name == "someone/Tiny-Qwen2VL"


def test_default_spec_imports_no_torch_or_the_hub():
    code = (
        "import sys, time, json\n"
        "t = time.perf_counter()\n"
        "import mineru_fit.models\n"
        "spec = mineru_fit.models.default_spec()\n"
        "ms = (time.perf_counter() - t) * 1000\n"
        "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub', 'safetensors', 'modelscope') if m in sys.modules]\n"
        "print(json.dumps({'ms': ms, 'heavy': heavy, 'params': spec.param_count}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout)
    assert result["heavy"] == []
    assert result["params"] == default_spec().param_count
    # How long it takes is a benchmark's business (benchmarks/plan_speed.py), not a test's:
    # a wall-clock limit here failed on busy machines while nothing heavy was imported.


def test_where_of_a_model_folder_is_the_folder(tiny, tmp_path):
    assert where(str(tiny)) == tiny
    assert where(str(tmp_path)) is None  # a folder, but no model in it
