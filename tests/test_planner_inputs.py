"""Bad planner input is refused with one clear line."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from mineru_fit.errors import PlanInputError
from mineru_fit.models import default_spec
from mineru_fit.planner import Hardware, Plan, PlanRequest, make_report
from mineru_fit.units import GIB


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"load_in_4bit": True, "load_in_8bit": True}, "exclude each other"),
        ({"mem_fraction_static": 1.2}, "outside (0, 1]"),
        ({"gpu_memory_utilization": 0}, "outside (0, 1]"),
        ({"engine": "tensorrt"}, "engine"),
        ({"level": "ludicrous"}, "level"),
        ({"concurrency": 0}, "concurrency"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_request_validation(kwargs, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        PlanRequest(**kwargs)


@pytest.mark.parametrize(
    "hw, kwargs, message",
    [
        (Hardware.from_vram(80), {"engine": "vllm", "tp_size": 2}, "needs 2 GPUs but --gpus gives 1 — use --gpus 2"),
        (Hardware.from_vram(80, gpu_count=4), {"engine": "vllm", "tp_size": 4}, "does not divide the model's 14 attention heads — use 1, 2, 7, 14"),
        (Hardware.from_vram(80, gpu_count=2), {"engine": "builtin", "tp_size": 2}, "does not split one model"),
        (Hardware.cpu(16 * GIB), {"engine": "sglang"}, "needs a CUDA GPU"),
        (Hardware.from_gpu(name="T4", total_bytes=16 * GIB, free_bytes=16 * GIB, gpu_count=1, compute_capability=(7, 5)),
         {"dtype": "bf16"}, "use --dtype float16"),
        (Hardware.from_gpu(name="T4", total_bytes=16 * GIB, free_bytes=16 * GIB, gpu_count=1, compute_capability=(7, 5)),
         {"engine": "sglang", "load_in_8bit": True}, "no 8-bit weight path"),
        (Hardware.from_vram(8), {"max_model_len": 300}, "shorter than one MinerU request (64 image tokens at the "
         "smallest image + 32 prompt + 256 output) — use at least 352"),
        (Hardware.from_vram(8), {"max_model_len": 40000}, "longer than the model's 32768-token context — use at most 32768"),
        (Hardware.from_vram(8), {"kv_cache_dtype": "fp8"}, "built-in engine keeps its KV cache"),
    ],
)
def test_impossible_requests_are_refused_before_planning(hw, kwargs, message):
    with pytest.raises(PlanInputError) as info:
        make_report(default_spec(), hw, PlanRequest(**kwargs))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_plan_json_round_trip_keeps_stable_keys():
    plan = make_report(default_spec(), Hardware.from_vram(12), PlanRequest(engine="vllm")).plan
    again = Plan.from_json(plan.to_json())
    assert again == plan
    keys = list(again.model_dump())
    for key in ("engine", "level", "budget_bytes", "predicted_peak_bytes", "terms", "kv_cache_tokens",
                "max_model_len", "max_image_pixels", "max_new_tokens", "batch_size", "argv", "env", "notes"):
        assert key in keys
    with pytest.raises(ValidationError):
        Plan.model_validate({**plan.model_dump(), "unexpected": 1})
