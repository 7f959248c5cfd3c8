"""derive.py equals what transformers builds from the same config, and what save_pretrained writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.tiny_qwen2vl import TEXT, VISION, build_tiny_qwen2vl, tiny_config
from mineru_fit.models import default_spec
from mineru_fit.models.config import parse_config, read_config
from mineru_fit.models.derive import derive_tensors
from mineru_fit.models.safetensors_header import read_checkpoint_tensors

ROOT = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data" / "models"

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _transformers_tensors(config) -> dict[str, tuple[int, ...]]:
    """Stored tensors of the model transformers builds (meta device; a tied lm_head once)."""
    with torch.device("meta"):
        model = transformers.Qwen2VLForConditionalGeneration(config)
    seen, out = set(), {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[name] = tuple(tensor.shape)
    return out


def _derived(config_dict: dict, naming: str) -> dict[str, tuple[int, ...]]:
    parsed = parse_config(config_dict)
    return {t.name: t.shape for t in derive_tensors(parsed.text, parsed.vision, naming=naming)}


VARIANTS = {
    "tiny-tied": dict(tie_word_embeddings=True),
    "tiny-untied": dict(tie_word_embeddings=False),
    "mha-no-gqa": dict(num_key_value_heads=4),
    "mqa-wide-mlp": dict(num_key_value_heads=1, intermediate_size=200, vocab_size=1000),
    "deeper": dict(num_hidden_layers=3, hidden_size=96, num_attention_heads=6, num_key_value_heads=2,
                   rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
}
VISION_VARIANTS = {
    "merge-1-ratio-2": dict(spatial_merge_size=1, mlp_ratio=2),
    "deeper-tower": dict(depth=3, embed_dim=48, num_heads=3, patch_size=8, temporal_patch_size=1),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_derived_names_and_shapes_equal_transformers_model(variant):
    overrides = dict(VARIANTS[variant])
    tied = overrides.pop("tie_word_embeddings", True)
    config = tiny_config(tie_word_embeddings=tied, **overrides)
    assert _derived(config.to_dict(), "transformers") == _transformers_tensors(config)


@pytest.mark.parametrize("variant", list(VISION_VARIANTS))
def test_derived_vision_tower_equals_transformers_model(variant):
    config = tiny_config()
    for key, value in VISION_VARIANTS[variant].items():
        setattr(config.vision_config, key, value)
    config = transformers.Qwen2VLConfig.from_dict(config.to_dict())
    vision = parse_config(config.to_dict()).vision
    assert all(getattr(vision, key) == value for key, value in VISION_VARIANTS[variant].items())
    assert _derived(config.to_dict(), "transformers") == _transformers_tensors(config)


def test_nested_mineru_config_builds_the_same_model_in_transformers():
    # The Pro-2605-style nested file: transformers' reading of it agrees with ours.
    data = json.loads((DATA / "pro2605_style_config.json").read_text())
    config = transformers.Qwen2VLConfig.from_dict(data)
    assert _derived(data, "transformers") == _transformers_tensors(config)


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("tied", [True, False])
def test_saved_headers_equal_derived_checkpoint_names(tmp_path, nested, tied):
    folder = build_tiny_qwen2vl(tmp_path, nested=nested, tie_word_embeddings=tied)
    parsed = read_config(folder / "config.json")
    derived = derive_tensors(parsed.text, parsed.vision, dtype=parsed.safetensors_dtype)
    header = read_checkpoint_tensors(folder)
    assert sorted((t.name, t.dtype, t.shape) for t in header) == sorted((t.name, t.dtype, t.shape) for t in derived)
    assert any(t.name == "lm_head.weight" for t in header) is not tied


def test_shipped_manifest_equals_derived_spec():
    spec = default_spec()
    derived = derive_tensors(spec.text, spec.vision)
    assert sorted((t.name, t.dtype, t.shape, t.role) for t in derived) == sorted(
        (t.name, t.dtype, t.shape, t.role) for t in spec.tensors
    )


def test_tiny_fixture_constants_match_its_config(tmp_path):
    parsed = read_config(build_tiny_qwen2vl(tmp_path) / "config.json")
    assert (parsed.text.hidden_size, parsed.text.num_layers) == (TEXT["hidden_size"], TEXT["num_hidden_layers"])
    assert (parsed.vision.embed_dim, parsed.vision.depth) == (VISION["embed_dim"], VISION["depth"])


@pytest.mark.slow
def test_manifest_script_reproduces_the_shipped_tensors_json():
    # Builds the full 1.2B model on the meta device (no memory): ~4 s.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_spec_manifest.py"), "--check"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
