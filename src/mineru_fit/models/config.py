"""Read a Qwen2-VL or Qwen2.5-VL config.json and preprocessor_config.json into TextSpec, VisionSpec, ImageSpec.

Both layouts are accepted: flat (text keys at the top, as MinerU2.5-2509 ships) and nested
(`text_config`, as newer transformers save, e.g. MinerU2.5-Pro-2605). Qwen2.5-VL (the base of
several MinerU-style forks) shares the language model and the memory equations; only its vision
blocks differ (RMSNorm, SwiGLU MLP, windowed attention), which the VisionSpec variant records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mineru_fit.errors import ModelSpecError
from mineru_fit.models.spec import ImageSpec, TextSpec, VisionSpec

DEFAULT_MIN_PIXELS = 50176  # 64·28·28, Qwen2-VL's image processor default
DEFAULT_MAX_PIXELS = 1605632  # 2048·28·28, MinerU2.5's published bound
DEFAULT_MAX_POSITION_EMBEDDINGS = 32768

# config.json's torch_dtype -> the safetensors dtype name a checkpoint in it would use.
TORCH_TO_SAFETENSORS_DTYPE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}

_QWEN2_VL_MODEL_TYPES = {"qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl"}
_QWEN2_VL_ARCHITECTURES = {
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen2VLModel": "qwen2_vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen2_5_VLModel": "qwen2_5_vl",
}
_FIX = "point mineru-fit at a MinerU2.5 (Qwen2-VL) model folder, or re-download it with `mineru-fit models download`"


@dataclass(frozen=True)
class ParsedConfig:
    """What config.json says about the model's shape."""

    text: TextSpec
    vision: VisionSpec
    torch_dtype: str  # e.g. "bfloat16"
    nested: bool  # True when the text keys sit under `text_config`

    @property
    def family(self) -> str:
        """qwen2_vl or qwen2_5_vl (the vision variant)."""
        return self.vision.variant

    @property
    def safetensors_dtype(self) -> str:
        return TORCH_TO_SAFETENSORS_DTYPE.get(self.torch_dtype, "BF16")


class _Reader:
    """Typed look-ups in one JSON object; every failure is one ModelSpecError line."""

    def __init__(self, data: Mapping[str, Any], origin: str, where: str = "") -> None:
        self.data = data
        self.origin = origin
        self.where = where  # e.g. " in vision_config"

    def fail(self, problem: str) -> ModelSpecError:
        return ModelSpecError(f"{self.origin}: {problem}{self.where} — {_FIX}")

    def has(self, *keys: str) -> bool:
        return any(self.data.get(k) is not None for k in keys)

    def raw(self, *keys: str) -> Any:
        for key in keys:
            if self.data.get(key) is not None:
                return key, self.data[key]
        raise self.fail(f"missing key '{keys[0]}'")

    def get_int(self, *keys: str, default: int | None = None, positive: bool = True) -> int:
        if default is not None and not self.has(*keys):
            return default
        key, value = self.raw(*keys)
        # JSON lists like [14, 14] are accepted by transformers for patch sizes; all equal means square.
        if isinstance(value, list) and value and all(v == value[0] for v in value):
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"'{key}' is {value!r}, expected an integer")
        if positive and value <= 0:
            raise self.fail(f"'{key}' is {value}, expected a positive integer")
        return value

    def get_number(self, *keys: str, default: float) -> float:
        if not self.has(*keys):
            return default
        key, value = self.raw(*keys)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise self.fail(f"'{key}' is {value!r}, expected a positive number")
        return float(value)

    def get_bool(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.fail(f"'{key}' is {value!r}, expected true or false")
        return value


def load_json_object(path: Path) -> dict[str, Any]:
    """Read a JSON file that must hold an object; errors name the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelSpecError(f"{path}: file not found — {_FIX}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelSpecError(f"{path}: cannot be read ({_one_line(exc)}) — {_FIX}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}) — {_FIX}") from exc
    if not isinstance(data, dict):
        raise ModelSpecError(f"{path}: expected a JSON object, found {type(data).__name__} — {_FIX}")
    return data


def read_config(path: Path) -> ParsedConfig:
    """Parse a Qwen2-VL config.json file."""
    return parse_config(load_json_object(path), origin=str(path))


def parse_config(data: Mapping[str, Any], *, origin: str = "config.json") -> ParsedConfig:
    """Parse a Qwen2-VL config dict (flat or nested); `origin` names it in errors."""
    top = _Reader(data, origin)
    family = _require_qwen2_vl(top)
    nested = isinstance(data.get("text_config"), dict)
    if data.get("text_config") is not None and not nested:
        raise top.fail(f"'text_config' is {data['text_config']!r}, expected an object")
    text_data = data["text_config"] if nested else data
    text = _parse_text(_Reader(text_data, origin, " in text_config" if nested else ""), top)
    vision_data = data.get("vision_config")
    if not isinstance(vision_data, dict):
        raise top.fail("missing object 'vision_config'" if vision_data is None else "'vision_config' is not an object")
    vision = _parse_vision(_Reader(vision_data, origin, " in vision_config"), family)
    dtype = data.get("torch_dtype") or data.get("dtype") or (text_data.get("torch_dtype") if nested else None)
    dtype = dtype if isinstance(dtype, str) and dtype in TORCH_TO_SAFETENSORS_DTYPE else "bfloat16"
    return ParsedConfig(text=text, vision=vision, torch_dtype=dtype, nested=nested)


def _require_qwen2_vl(top: _Reader) -> str:
    """The family (qwen2_vl or qwen2_5_vl) this config declares, or one clear error."""
    model_type = top.data.get("model_type")
    architectures = top.data.get("architectures")
    names = [a for a in architectures if isinstance(a, str)] if isinstance(architectures, list) else []
    if isinstance(model_type, str) and model_type in _QWEN2_VL_MODEL_TYPES:
        return _QWEN2_VL_MODEL_TYPES[model_type]
    for name in names:
        if name in _QWEN2_VL_ARCHITECTURES:
            return _QWEN2_VL_ARCHITECTURES[name]
    found = f"model_type {model_type!r}" if model_type is not None else "no model_type"
    raise ModelSpecError(
        f"{top.origin}: {found} is not a Qwen2-VL (expected 'qwen2_vl' or 'qwen2_5_vl') — mineru-fit plans "
        "MinerU2.5 and other Qwen2-VL-family checkpoints only; point it at such a model folder"
    )


def _parse_text(r: _Reader, top: _Reader) -> TextSpec:
    hidden = r.get_int("hidden_size")
    heads = r.get_int("num_attention_heads")
    kv_heads = r.get_int("num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise r.fail(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    if r.has("head_dim"):
        head_dim = r.get_int("head_dim")
    elif hidden % heads:
        raise r.fail(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    else:
        head_dim = hidden // heads
    # transformers reads tie_word_embeddings from the top; pre-v5 nested saves put it in text_config.
    tied = top.get_bool("tie_word_embeddings", False) or (r.data is not top.data and r.get_bool("tie_word_embeddings", False))
    return TextSpec(
        hidden_size=hidden,
        num_layers=r.get_int("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=r.get_int("intermediate_size"),
        vocab_size=r.get_int("vocab_size"),
        tie_word_embeddings=tied,
        max_position_embeddings=r.get_int("max_position_embeddings", default=DEFAULT_MAX_POSITION_EMBEDDINGS),
    )


def _parse_vision(r: _Reader, family: str = "qwen2_vl") -> VisionSpec:
    if r.has("embed_dim") or not r.has("out_hidden_size"):
        # Qwen2-VL naming (and the aliases its transformers config maps): hidden_size is the
        # merger's output, i.e. the language model's width.
        embed = r.get_int("embed_dim")
        out = r.get_int("hidden_size")
        mlp_ratio = r.get_number("mlp_ratio", default=4.0)
    else:
        # Qwen2.5-VL-style naming: hidden_size is the tower width, out_hidden_size the merger's output.
        embed = r.get_int("hidden_size")
        out = r.get_int("out_hidden_size")
        if r.has("intermediate_size"):
            mlp_ratio = r.get_int("intermediate_size") / embed
        else:
            mlp_ratio = r.get_number("mlp_ratio", default=4.0)
    heads = r.get_int("num_heads", "num_attention_heads")
    if embed % heads:
        raise r.fail(f"embed_dim {embed} is not a multiple of num_heads {heads}")
    return VisionSpec(
        embed_dim=embed,
        depth=r.get_int("depth", "num_hidden_layers"),
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        patch_size=r.get_int("patch_size", default=14),
        temporal_patch_size=r.get_int("temporal_patch_size", default=2),
        spatial_merge_size=r.get_int("spatial_merge_size", default=2),
        in_channels=r.get_int("in_channels", "in_chans", default=3),
        out_hidden_size=out,
        variant=family,
    )


def read_image_spec(path: Path) -> ImageSpec:
    """Parse preprocessor_config.json; a missing file means the Qwen2-VL defaults."""
    if not path.exists():
        return ImageSpec(min_pixels=DEFAULT_MIN_PIXELS, max_pixels=DEFAULT_MAX_PIXELS)
    return parse_image_spec(load_json_object(path), origin=str(path))


def parse_image_spec(data: Mapping[str, Any], *, origin: str = "preprocessor_config.json") -> ImageSpec:
    """min_pixels/max_pixels, or size.shortest_edge/longest_edge (newer files), else the defaults."""
    r = _Reader(data, origin)
    size = data.get("size")
    if not r.has("min_pixels", "max_pixels") and isinstance(size, dict):
        # Qwen2-VL's image processor stores pixel counts, not edge lengths, under these names.
        r = _Reader(size, origin, " in size")
        low, high = ("shortest_edge",), ("longest_edge",)
    else:
        low, high = ("min_pixels",), ("max_pixels",)
    min_pixels = r.get_int(*low, default=DEFAULT_MIN_PIXELS)
    max_pixels = r.get_int(*high, default=DEFAULT_MAX_PIXELS)
    if min_pixels > max_pixels:
        raise r.fail(f"min pixels {min_pixels} exceed max pixels {max_pixels}")
    return ImageSpec(min_pixels=min_pixels, max_pixels=max_pixels)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
