"""`mineru-fit models ...` as a user runs it: real process, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.fake_hub import FakeHub
from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

DATA = Path(__file__).parent / "data" / "models"
REPO = "opendatalab/MinerU2.5-2509-1.2B"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU", "HF_", "MODELSCOPE"))}
    clean.update(
        HF_HUB_CACHE=str(tmp_path / "hf-cache"),
        MODELSCOPE_CACHE=str(tmp_path / "ms-cache"),
        MINERU_FIT_CONFIG=str(tmp_path / "no-config.toml"),
        COLUMNS="200",
    )
    return clean


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from mineru_fit.cli import main; main()", "models", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def _bad_header(kind: str) -> bytes:
    good = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    if kind == "garbage":
        return b"\x89PNG\r\n\x1a\n" + b"garbage" * 10  # a PNG, not a safetensors file
    if kind == "length-past-end":
        return struct.pack("<Q", 1 << 20) + good + b"\0" * 8
    if kind == "not-json":
        return struct.pack("<Q", 9) + b"{nope: 1}" + b"\0" * 8
    if kind == "offsets-vs-shape":
        bad = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
        return struct.pack("<Q", len(bad)) + bad + b"\0" * 8
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["garbage", "length-past-end", "not-json", "offsets-vs-shape"])
def test_spec_of_a_corrupt_checkpoint_exits_2_with_one_line(tmp_path, tiny, env, kind):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny / "config.json").read_bytes())
    (folder / "model.safetensors").write_bytes(_bad_header(kind))
    assert_one_line_error(run(env, "spec", str(folder)), 2, "model.safetensors")


@pytest.mark.parametrize(
    ("config", "needle"),
    [('{"model_type": "qwen2_vl", ', "not valid JSON"), ((DATA / "not_qwen2vl_config.json").read_text(), "not a Qwen2-VL")],
)
def test_spec_of_a_bad_config_exits_2_with_one_line(tmp_path, env, config, needle):
    (tmp_path / "config.json").write_text(config)
    assert_one_line_error(run(env, "spec", str(tmp_path)), 2, needle)


def test_spec_json_of_the_shipped_model(env):
    result = run(env, "spec", "--json")
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    assert spec["name"] == REPO and spec["tensors_from_header"] is False
    assert spec["kv_bytes_per_token"] == {"bf16": 12288, "fp8": 6144}
    assert spec["bytes_by_dtype"] == {"BF16": spec["weight_bytes"]}
    parts = spec["params_by_part"]
    assert sum(parts.values()) == spec["param_count"]
    assert 6.0e8 < parts["vision"] < 7.0e8 and 5e6 < parts["merger"] < 4e7


def test_spec_table_of_a_model_folder(tiny, env):
    result = run(env, "spec", str(tiny))
    assert result.returncode == 0, result.stderr
    assert "safetensors headers" in result.stdout and "KV cache per token: 256 bytes bf16" in result.stdout


def test_where_absent_exits_1_with_one_line(env):
    assert_one_line_error(run(env, "where", REPO), 1, f"mineru-fit models download {REPO}")


def test_list_json(env):
    result = run(env, "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["hf_id"] for r in rows][0] == REPO and not any(r["present"] for r in rows)


def test_download_local_prints_the_folder(tiny, env):
    result = run(env, "download", "--source", "local", "--dir", str(tiny))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tiny.resolve())


def test_download_from_the_hub_then_where_and_spec(tiny, env):
    with FakeHub({REPO: tiny}) as hub:
        env = {**env, "HF_ENDPOINT": hub.endpoint}
        result = run(env, "download")  # MINERU_FIT_MODEL's default, from MINERU_MODEL_SOURCE's default
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip().splitlines()[-1]
    assert (Path(path) / "model.safetensors").is_file()
    assert run(env, "where", "OpenDataLab/MinerU2.5-2509-1.2B").stdout.strip() == path
    spec = json.loads(run(env, "spec", REPO, "--json").stdout)
    assert spec["tensors_from_header"] is True and spec["source"] == path


def test_download_unreachable_hub_exits_1_quickly(env):
    import socket

    with socket.socket() as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        env = {**env, "HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}", "MINERU_FIT_HUB_TIMEOUT_S": "1"}
        start = time.monotonic()
        result = run(env, "download", REPO, timeout=30)
    assert_one_line_error(result, 1, "no answer within 1 s")
    assert time.monotonic() - start < 10


def test_download_unknown_source_is_a_usage_error(env):
    result = run(env, "download", "--source", "ftp")
    assert result.returncode == 2 and "Traceback" not in result.stderr
