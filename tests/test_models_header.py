"""safetensors headers: read exactly what the file holds, refuse every corrupt header in one line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.tiny_qwen2vl import build_tiny_qwen2vl
from mineru_fit.errors import ModelSpecError
from mineru_fit.models.safetensors_header import read_checkpoint_tensors, read_header

DATA = Path(__file__).parent / "data" / "models"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny"))


def _write(path: Path, header: dict, data_bytes: int, *, length: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + b"\0" * data_bytes)
    return path


def _assert_one_line(exc: BaseException, path: Path, needle: str) -> None:
    text = str(exc)
    assert "\n" not in text and str(path) in text and needle in text and " — " in text


def test_header_matches_the_safetensors_library(tiny):
    safetensors = pytest.importorskip("safetensors")
    path = tiny / "model.safetensors"
    ours = read_header(path)
    with safetensors.safe_open(str(path), "pt") as f:
        theirs = {name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape())) for name in f.keys()}
        metadata = f.metadata()
    assert {t.name: (t.dtype, t.shape) for t in ours.tensors} == theirs
    assert ours.metadata == metadata
    assert sum(t.nbytes for t in ours.tensors) == ours.data_bytes


def test_sharded_checkpoint_reads_every_shard(tmp_path, tiny):
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    sharded = read_checkpoint_tensors(tmp_path)
    single = read_checkpoint_tensors(tiny)
    assert sorted((t.name, t.dtype, t.shape) for t in sharded) == sorted((t.name, t.dtype, t.shape) for t in single)


def test_folder_without_weights_has_no_header(tmp_path):
    assert read_checkpoint_tensors(tmp_path) is None


def test_garbage_bytes(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"this is not a safetensors file, it is text\n" * 3)
    with pytest.raises(ModelSpecError) as info:
        read_header(path)
    _assert_one_line(info.value, path, "does not fit the file size")


def test_short_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ModelSpecError) as info:
        read_header(path)
    _assert_one_line(info.value, path, "too short")


def test_header_length_larger_than_the_file(tmp_path):
    path = _write(tmp_path / "m.safetensors", {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4, length=10_000)
    with pytest.raises(ModelSpecError) as info:
        read_header(path)
    _assert_one_line(info.value, path, "header length 10000")


def test_header_not_json(tmp_path):
    path = tmp_path / "m.safetensors"
    raw = b"{not json at all}"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(ModelSpecError) as info:
        read_header(path)
    _assert_one_line(info.value, path, "not valid JSON")


def test_header_json_but_not_an_object(tmp_path):
    path = tmp_path / "m.safetensors"
    raw = b"[1, 2, 3]"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ModelSpecError, match="not a JSON object"):
        read_header(path)


@pytest.mark.parametrize(
    ("entry", "data_bytes", "needle"),
    [
        ({"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 16]}, 16, "spans 16 bytes but BF16[4, 4] needs 32"),
        ({"dtype": "Q4_K", "shape": [4], "data_offsets": [0, 4]}, 4, "unknown dtype 'Q4_K'"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, 4, "expected a list of non-negative integers"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0]}, 4, "expected [begin, end]"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, 8, "starts at byte 4, expected 0"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, 12, "tensors cover 4 bytes but the data buffer holds 12"),
        ("not an object", 0, "is not an object"),
    ],
)
def test_entries_that_do_not_match_the_file(tmp_path, entry, data_bytes, needle):
    path = _write(tmp_path / "m.safetensors", {"w": entry}, data_bytes)
    with pytest.raises(ModelSpecError) as info:
        read_header(path)
    _assert_one_line(info.value, path, needle)


def test_overlapping_tensors(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    path = _write(tmp_path / "m.safetensors", header, 12)
    with pytest.raises(ModelSpecError, match="starts at byte 4, expected 8"):
        read_header(path)


def test_bad_metadata(tmp_path):
    header = {"__metadata__": {"format": 1}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    with pytest.raises(ModelSpecError, match="__metadata__"):
        read_header(_write(tmp_path / "m.safetensors", header, 4))


def test_truncated_data_buffer():
    path = DATA / "truncated.safetensors"
    with pytest.raises(ModelSpecError) as info:
        read_header(path)
    _assert_one_line(info.value, path, "truncated")


def test_truncated_real_checkpoint(tmp_path, tiny):
    data = (tiny / "model.safetensors").read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelSpecError, match="truncated"):
        read_checkpoint_tensors(tmp_path)


def test_index_problems(tmp_path, tiny):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(ModelSpecError, match="shard model-00001-of-00002.safetensors is missing"):
        read_checkpoint_tensors(tmp_path)
    index.write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    with pytest.raises(ModelSpecError, match="not a file in the folder"):
        read_checkpoint_tensors(tmp_path)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ModelSpecError, match="weight_map"):
        read_checkpoint_tensors(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((tiny / "model.safetensors").read_bytes())
    index.write_text(json.dumps({"weight_map": {"no.such.tensor": "model.safetensors"}}))
    with pytest.raises(ModelSpecError, match="'no.such.tensor' listed in"):
        read_checkpoint_tensors(tmp_path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200), cut=st.integers(0, 400))
def test_any_bytes_are_read_or_refused_in_one_line(tmp_path, tiny, blob, cut):
    # Random bytes, and a real header with random bytes spliced in: never any other exception.
    real = (tiny / "model.safetensors").read_bytes()[:600]
    for data in (blob, real[:cut] + blob + real[cut + len(blob):]):
        path = tmp_path / "fuzz.safetensors"
        path.write_bytes(data)
        try:
            header = read_header(path)
        except ModelSpecError as exc:
            assert "\n" not in str(exc)
        else:
            assert sum(t.nbytes for t in header.tensors) == header.data_bytes
