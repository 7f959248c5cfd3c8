"""Settings: the guide's variables, MINERU_FIT_*, a config file; bad values named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mineru_fit.errors import SettingsError
from mineru_fit.settings import ModelSource, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("MINERU_", "PYTORCH_CUDA_ALLOC_CONF")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MINERU_FIT_CONFIG", str(tmp_path / "absent.toml"))


def test_guide_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINERU_VIRTUAL_VRAM_SIZE", "6")
    monkeypatch.setenv("MINERU_DEVICE_MODE", "CUDA:1")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("MINERU_MODEL_SOURCE", "modelscope")
    s = load_settings()
    assert s.virtual_vram_bytes == 6 * 1024**3
    assert s.device_mode == "cuda:1"
    assert s.pytorch_cuda_alloc_conf == "expandable_segments:True"
    assert s.model_source is ModelSource.modelscope


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("MINERU_DEVICE_MODE", "gpu", "MINERU_DEVICE_MODE='gpu' is not valid — accepted values: cuda, cuda:N, cpu, mps"),
        ("MINERU_VIRTUAL_VRAM_SIZE", "-2", "MINERU_VIRTUAL_VRAM_SIZE='-2' is not valid — must be a positive number"),
        ("MINERU_VIRTUAL_VRAM_SIZE", "lots", "MINERU_VIRTUAL_VRAM_SIZE='lots' is not valid"),
        ("MINERU_MODEL_SOURCE", "hf", "accepted values: huggingface, modelscope, local"),
        ("MINERU_FIT_PORT", "99999", "MINERU_FIT_PORT='99999' is not valid"),
        ("MINERU_FIT_BOGUS", "1", "unknown setting MINERU_FIT_BOGUS"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_config_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('port = 31000\nmodel = "/models/mineru"\nMINERU_VIRTUAL_VRAM_SIZE = 4\n')
    monkeypatch.setenv("MINERU_FIT_CONFIG", str(config))
    monkeypatch.setenv("MINERU_FIT_PORT", "32000")
    s = load_settings()
    assert s.model == "/models/mineru" and s.virtual_vram_size_gib == 4
    assert s.port == 32000


def test_unknown_config_key_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("prot = 31000\n")
    monkeypatch.setenv("MINERU_FIT_CONFIG", str(config))
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings()


def test_malformed_config_file_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("port = = 3\n")
    monkeypatch.setenv("MINERU_FIT_CONFIG", str(config))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(config) in str(info.value) and "\n" not in str(info.value)
