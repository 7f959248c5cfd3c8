"""config.json / preprocessor_config.json parsing: both layouts, defaults, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mineru_fit.errors import ModelSpecError
from mineru_fit.models.config import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    parse_config,
    parse_image_spec,
    read_config,
    read_image_spec,
)

DATA = Path(__file__).parent / "data" / "models"
SHIPPED = Path(__file__).parents[1] / "src" / "mineru_fit" / "models" / "data" / "MinerU2.5-2509-1.2B"


def _shipped_config() -> dict:
    return json.loads((SHIPPED / "config.json").read_text())


def _assert_one_line(exc: ModelSpecError, *needles: str) -> None:
    text = str(exc)
    assert "\n" not in text
    assert " — " in text, "the message must end with what to do"
    for needle in needles:
        assert needle in text


def test_flat_config_gives_the_published_mineru_numbers():
    parsed = read_config(SHIPPED / "config.json")
    t, v = parsed.text, parsed.vision
    assert not parsed.nested
    assert (t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads, t.head_dim) == (896, 24, 14, 2, 64)
    assert (t.intermediate_size, t.vocab_size, t.tie_word_embeddings) == (4864, 151936, True)
    assert (v.embed_dim, v.depth, v.num_heads, v.mlp_ratio, v.out_hidden_size) == (1280, 32, 16, 4.0, 896)
    assert (v.patch_size, v.temporal_patch_size, v.spatial_merge_size, v.in_channels) == (14, 2, 2, 3)
    assert v.pixels_per_token == 784
    assert parsed.torch_dtype == "bfloat16" and parsed.safetensors_dtype == "BF16"


def test_nested_text_config_parses_to_the_same_shape_as_flat():
    flat = read_config(SHIPPED / "config.json")
    nested = read_config(DATA / "pro2605_style_config.json")
    assert nested.nested
    assert (nested.text, nested.vision, nested.torch_dtype) == (flat.text, flat.vision, flat.torch_dtype)


def test_qwen25_style_vision_names_map_to_tower_width_and_merger_output():
    vision = read_config(DATA / "qwen25vl_style_vision_config.json").vision
    assert (vision.embed_dim, vision.out_hidden_size, vision.mlp_ratio) == (1280, 896, 4.0)


def test_head_dim_is_hidden_over_heads_unless_given():
    data = _shipped_config()
    assert parse_config(data).text.head_dim == 64
    data["head_dim"] = 128
    assert parse_config(data).text.head_dim == 128


def test_transformers_aliases_and_defaults_are_accepted():
    data = _shipped_config()
    vision = data["vision_config"]
    vision["num_attention_heads"] = vision.pop("num_heads")
    vision["num_hidden_layers"] = vision.pop("depth")
    vision["patch_size"] = [14, 14]
    del vision["mlp_ratio"], vision["in_chans"]
    del data["num_key_value_heads"], data["max_position_embeddings"]
    parsed = parse_config(data)
    assert (parsed.vision.num_heads, parsed.vision.depth, parsed.vision.patch_size) == (16, 32, 14)
    assert (parsed.vision.mlp_ratio, parsed.vision.in_channels) == (4.0, 3)
    assert parsed.text.num_kv_heads == parsed.text.num_heads == 14  # transformers' rule when absent
    assert parsed.text.max_position_embeddings == 32768


def test_tie_word_embeddings_inside_text_config_counts(tmp_path):
    data = json.loads((DATA / "pro2605_style_config.json").read_text())
    del data["tie_word_embeddings"]
    assert parse_config(data).text.tie_word_embeddings is False
    data["text_config"]["tie_word_embeddings"] = True  # where pre-v5 nested saves put it
    assert parse_config(data).text.tie_word_embeddings is True


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "qwen2_vl",')
    with pytest.raises(ModelSpecError) as info:
        read_config(path)
    _assert_one_line(info.value, str(path), "not valid JSON", "line 1")


def test_config_that_is_not_qwen2_vl_is_refused():
    with pytest.raises(ModelSpecError) as info:
        read_config(DATA / "not_qwen2vl_config.json")
    _assert_one_line(info.value, "not_qwen2vl_config.json", "'llama'", "not a Qwen2-VL")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("hidden_size"), "missing key 'hidden_size'"),
        (lambda d: d.update(num_hidden_layers="24"), "'num_hidden_layers' is '24', expected an integer"),
        (lambda d: d.update(num_attention_heads=True), "expected an integer"),
        (lambda d: d.update(vocab_size=0), "expected a positive integer"),
        (lambda d: d.update(num_key_value_heads=3), "not a multiple of num_key_value_heads"),
        (lambda d: d.update(hidden_size=900), "not a multiple of num_attention_heads"),
        (lambda d: d.pop("vision_config"), "missing object 'vision_config'"),
        (lambda d: d.update(vision_config=[1]), "'vision_config' is not an object"),
        (lambda d: d["vision_config"].pop("embed_dim"), "missing key 'embed_dim' in vision_config"),
        (lambda d: d["vision_config"].update(mlp_ratio="4"), "'mlp_ratio' is '4', expected a positive number"),
        (lambda d: d.update(tie_word_embeddings="yes"), "expected true or false"),
        (lambda d: d.update(text_config=5), "'text_config' is 5"),
    ],
)
def test_broken_keys_give_one_line_naming_the_key(tmp_path, mutate, needle):
    data = _shipped_config()
    mutate(data)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelSpecError) as info:
        read_config(path)
    _assert_one_line(info.value, str(path), needle)


def test_config_that_is_a_list_or_unreadable_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelSpecError, match="expected a JSON object"):
        read_config(tmp_path / "config.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelSpecError, match="cannot be read|not valid JSON"):
        read_config(tmp_path / "bin.json")
    with pytest.raises(ModelSpecError, match="file not found"):
        read_config(tmp_path / "absent.json")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                         "intermediate_size", "vocab_size", "head_dim", "tie_word_embeddings", "model_type",
                         "vision_config", "text_config", "max_position_embeddings"]),
    vision_key=st.sampled_from(["depth", "embed_dim", "num_heads", "hidden_size", "mlp_ratio", "patch_size",
                                "spatial_merge_size", "in_chans", "out_hidden_size"]),
    value=_json_values,
    where=st.sampled_from(["top", "vision"]),
)
def test_any_single_bad_value_is_a_spec_error_or_a_valid_spec(key, vision_key, value, where):
    data = _shipped_config()
    target = data if where == "top" else data["vision_config"]
    target[key if where == "top" else vision_key] = value
    try:
        parsed = parse_config(data)
    except ModelSpecError as exc:
        assert "\n" not in str(exc)
        return
    t = parsed.text
    assert min(t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads, t.head_dim, t.vocab_size) > 0
    assert parsed.vision.embed_dim % parsed.vision.num_heads == 0


def test_image_spec_from_min_max_pixels_and_from_size_edges():
    assert read_image_spec(SHIPPED / "preprocessor_config.json") == parse_image_spec(
        {"size": {"shortest_edge": 50176, "longest_edge": 1605632}}
    )
    spec = read_image_spec(SHIPPED / "preprocessor_config.json")
    assert (spec.min_pixels, spec.max_pixels) == (50176, 1605632)


def test_image_spec_defaults_when_file_or_keys_absent(tmp_path):
    default = (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    spec = read_image_spec(tmp_path / "preprocessor_config.json")
    assert (spec.min_pixels, spec.max_pixels) == default == (50176, 1605632)
    spec = parse_image_spec({"image_processor_type": "Qwen2VLImageProcessor"})
    assert (spec.min_pixels, spec.max_pixels) == default


def test_bad_image_spec_is_one_line(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({"min_pixels": 10_000, "max_pixels": 5_000}))
    with pytest.raises(ModelSpecError) as info:
        read_image_spec(path)
    _assert_one_line(info.value, str(path), "exceed")
    path.write_text(json.dumps({"size": {"shortest_edge": "big"}}))
    with pytest.raises(ModelSpecError) as info:
        read_image_spec(path)
    _assert_one_line(info.value, "'shortest_edge' is 'big'")
