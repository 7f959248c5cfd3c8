"""Loading in 16, 8 and 4 bits on the CPU: the bytes the planner predicts are the bytes held."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")

from fixtures.tiny_qwen2vl import build_tiny_qwen2vl  # noqa: E402

from mineru_fit.engines.builtin.options import BuiltinOptions  # noqa: E402
from mineru_fit.models import spec_from_dir  # noqa: E402
from mineru_fit.planner import terms as T  # noqa: E402
from mineru_fit.planner.levels import Quant  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-load"))


@pytest.mark.parametrize(
    "flags, quant, layer_class",
    [({}, Quant.none, "Linear"), ({"load_in_8bit": True}, Quant.int8, "Linear8bitLt"),
     ({"load_in_4bit": True}, Quant.nf4, "Linear4bit")],
)
def test_weights_measured_from_storage_match_the_planner(model_dir: Path, flags: dict, quant: Quant,
                                                         layer_class: str) -> None:
    from mineru_fit.engines.builtin.loader import load_model

    loaded = load_model(BuiltinOptions(model=str(model_dir), device="cpu", dtype="bfloat16", **flags))
    predicted = T.weights_bytes(spec_from_dir(model_dir), "bfloat16", quant, quantize_vision=True, double_quant=True)
    assert abs(predicted - loaded.weights_bytes) / loaded.weights_bytes < 0.05
    qkv = loaded.model.model.visual.blocks[0].attn.qkv
    assert type(qkv).__name__ == layer_class  # the vision tower is quantized too
    # SDPA everywhere: eager attention in the vision tower would be quadratic in the patches.
    assert loaded.model.config._attn_implementation == "sdpa"
    assert loaded.model.config.vision_config._attn_implementation == "sdpa"


def test_a_4bit_model_generates_on_the_cpu(tmp_path: Path) -> None:
    from PIL import Image

    from mineru_fit.engines.builtin.generation import Generator
    from mineru_fit.engines.builtin.jobs import Job, SamplingKey
    from mineru_fit.engines.builtin.loader import load_model

    # bitsandbytes' CPU 4-bit kernel needs every Linear at least one 64-weight block wide.
    wide = build_tiny_qwen2vl(tmp_path, vision={"embed_dim": 64})
    loaded = load_model(BuiltinOptions(model=str(wide), device="cpu", dtype="bfloat16", load_in_4bit=True))
    generator = Generator(loaded)
    key = SamplingKey(0.0, 1.0, None, 1.0, 0.0, 0.0, 0, (), False)
    job = Job([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nText Recognition:"}]}],
              [Image.new("RGB", (112, 84), "white")], key, max_new_tokens=4, requested_max_tokens=4)
    generator.encode(job)
    [outcome] = generator.run([job])
    assert outcome.ok and outcome.completion_tokens == 4 and outcome.prompt_tokens == job.prompt_tokens
