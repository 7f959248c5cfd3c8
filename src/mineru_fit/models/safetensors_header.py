"""Tensor names, dtypes and shapes from safetensors headers only; no weight byte is read.

Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets}, "__metadata__": {...}}, then the data buffer the offsets point into.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mineru_fit.errors import ModelSpecError
from mineru_fit.models.config import load_json_object
from mineru_fit.models.spec import DTYPE_BYTES, TensorInfo

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# The safetensors library refuses headers above 100 MB; a bigger length means a corrupt file.
MAX_HEADER_BYTES = 100_000_000
_FIX = "the file is corrupt or not a safetensors file; re-download the model with `mineru-fit models download`"


@dataclass(frozen=True)
class SafetensorsHeader:
    """One file's header: its tensors (role not yet assigned) and free-form metadata."""

    path: Path
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]
    data_bytes: int  # size of the data buffer after the header


def read_header(path: Path) -> SafetensorsHeader:
    """Read and strictly validate one .safetensors header."""
    fail = _failer(path)
    try:
        with open(path, "rb") as fh:
            file_bytes = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise fail(f"{file_bytes} bytes is too short for a safetensors header")
            header_bytes = int.from_bytes(prefix, "little")
            if header_bytes == 0 or header_bytes > MAX_HEADER_BYTES or 8 + header_bytes > file_bytes:
                raise fail(f"header length {header_bytes} does not fit the file size {file_bytes}")
            raw = fh.read(header_bytes)
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from exc
    if len(raw) != header_bytes:
        raise fail("file ended inside the header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail("header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")
    data_bytes = file_bytes - 8 - header_bytes
    metadata = _metadata(header.pop("__metadata__", None), fail)
    tensors, spans = [], []
    for name, entry in header.items():
        info, span = _tensor(name, entry, fail)
        tensors.append(info)
        spans.append((span, name))
    _check_spans(spans, data_bytes, fail)
    return SafetensorsHeader(path=path, tensors=tuple(tensors), metadata=metadata, data_bytes=data_bytes)


def read_checkpoint_tensors(model_dir: Path) -> tuple[TensorInfo, ...] | None:
    """Every tensor of a checkpoint folder (sharded via the index, or one file); None if it has none."""
    index = model_dir / INDEX_FILE
    if index.is_file():
        return _read_sharded(index)
    single = model_dir / SINGLE_FILE
    if single.is_file():
        return read_header(single).tensors
    return None


def _read_sharded(index: Path) -> tuple[TensorInfo, ...]:
    data = load_json_object(index)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelSpecError(f"{index}: missing or empty 'weight_map' — {_FIX}")
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise ModelSpecError(f"{index}: tensor {name!r} maps to {shard!r}, not a file in the folder — {_FIX}")
        shards.setdefault(shard, []).append(name)
    seen: dict[str, str] = {}
    tensors: list[TensorInfo] = []
    for shard, names in shards.items():
        path = index.parent / shard
        if not path.is_file():
            raise ModelSpecError(f"{index}: shard {shard} is missing — finish the download with `mineru-fit models download`")
        header = read_header(path)
        present = {t.name for t in header.tensors}
        absent = [n for n in names if n not in present]
        if absent:
            raise ModelSpecError(f"{path}: tensor {absent[0]!r} listed in {INDEX_FILE} is not in this shard — {_FIX}")
        for t in header.tensors:
            if t.name in seen:
                raise ModelSpecError(f"{path}: tensor {t.name!r} is also in {seen[t.name]} — {_FIX}")
            seen[t.name] = shard
            tensors.append(t)
    return tuple(tensors)


def _failer(path: Path):
    def fail(problem: str) -> ModelSpecError:
        return ModelSpecError(f"{path}: {problem} — {_FIX}")

    return fail


def _metadata(value: Any, fail) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise fail("__metadata__ is not a string-to-string object")
    return dict(value)


def _tensor(name: str, entry: Any, fail) -> tuple[TensorInfo, tuple[int, int]]:
    if not isinstance(entry, dict):
        raise fail(f"entry for tensor {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise fail(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise fail(f"tensor {name!r} has shape {shape!r}, expected a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise fail(f"tensor {name!r} has data_offsets {offsets!r}, expected [begin, end]")
    begin, end = offsets
    expected = int(math.prod(shape) * DTYPE_BYTES[dtype])
    if end - begin != expected:
        raise fail(f"tensor {name!r} spans {end - begin} bytes but {dtype}{shape} needs {expected}")
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape)), (begin, end)


def _check_spans(spans: list[tuple[tuple[int, int], str]], data_bytes: int, fail) -> None:
    # Tensors must tile the data buffer exactly, as the safetensors library requires: a gap,
    # overlap or short buffer means the header lies about the file (or the file is truncated).
    position = 0
    for (begin, end), name in sorted(spans):
        if begin != position:
            raise fail(f"tensor {name!r} starts at byte {begin}, expected {position}")
        position = end
    if position != data_bytes:
        raise fail(f"tensors cover {position} bytes but the data buffer holds {data_bytes} (truncated file?)")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
