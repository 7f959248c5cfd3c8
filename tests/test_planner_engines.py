"""Each engine's equation, checked the way that engine would see it."""

from __future__ import annotations

import pytest

from mineru_fit.models import default_spec
from mineru_fit.planner import Hardware, PlanRequest, make_report
from mineru_fit.planner import constants as C
from mineru_fit.planner.calibration import cuda_context_bytes
from mineru_fit.units import GIB


@pytest.fixture(scope="module")
def spec():
    return default_spec()


def shared_h100(free_gib: float) -> Hardware:
    return Hardware.from_gpu(
        name="NVIDIA H100 80GB HBM3", total_bytes=80 * GIB, free_bytes=int(free_gib * GIB),
        gpu_count=1, compute_capability=(9, 0),
    )


def test_guide_sglang_command_on_an_8gb_card(spec):
    # The guide: mineru-sglang-server --mem-fraction-static 0.3 --load-in-4bit --max-model-len 2048
    hw = Hardware.from_vram(8)
    req = PlanRequest(engine="sglang", level="none", mem_fraction_static=0.3, load_in_4bit=True, max_model_len=2048)
    plan = make_report(spec, hw, req).plan
    assert plan.weight_format == "nf4" and plan.max_model_len == 2048 and plan.memory_fraction == 0.3
    # SGLang's rule: KV pool = mfs × (free once its CUDA context exists) − weights (− what else
    # loads into the pool); model_runner.profile_max_num_token.
    free_at_start = hw.free_bytes - cuda_context_bytes(hw.name)[0]
    pool = int(0.3 * free_at_start) - plan.terms["weights"] - C.SGLANG_POOL_SLACK_BYTES
    per_token = 12288  # level none keeps the KV in bf16
    assert plan.kv_cache_tokens == int(pool // per_token)
    assert "--mem-fraction-static" in plan.argv and plan.argv[plan.argv.index("--mem-fraction-static") + 1] == "0.3"
    assert plan.fits


def test_sglang_fraction_is_relative_to_free_memory(spec):
    req = PlanRequest(engine="sglang", level="basic")
    alone = make_report(spec, shared_h100(79), req).plan
    shared = make_report(spec, shared_h100(20), req).plan
    # Same pinned KV, so the fraction of a smaller free pool must be larger.
    assert alone.kv_cache_tokens == shared.kv_cache_tokens
    assert shared.memory_fraction > alone.memory_fraction
    assert shared.memory_fraction * 20 * GIB >= shared.terms["weights"] + shared.terms["kv_cache"]


def test_vllm_refuses_when_free_is_below_utilisation_times_total(spec):
    plan = make_report(spec, shared_h100(40), PlanRequest(engine="vllm", level="none")).plan
    assert not plan.fits
    assert any("vLLM refuses to start" in p and "0.9" in p for p in plan.problems)
    # auto moves on to a level whose utilisation the free memory can satisfy.
    auto = make_report(spec, shared_h100(40), PlanRequest(engine="vllm")).plan
    assert auto.fits and auto.memory_fraction * 80 * GIB <= 40 * GIB


def test_vllm_pins_kv_bytes_and_the_utilisation_covers_the_plan(spec):
    plan = make_report(spec, Hardware.from_vram(24), PlanRequest(engine="vllm", level="basic")).plan
    argv = plan.argv
    assert int(argv[argv.index("--kv-cache-memory-bytes") + 1]) == plan.terms["kv_cache"]
    assert plan.kv_cache_tokens == plan.batch_size * plan.max_model_len
    # vLLM's budget (utilisation × total) holds everything but its CUDA context, which it
    # measures before the budget starts (gpu_worker.py / memory_profiling).
    context = cuda_context_bytes(plan.device.name)[0]
    assert plan.memory_fraction * 24 * GIB >= plan.predicted_peak_bytes - context


def test_builtin_static_kv_holds_every_request_of_the_batch(spec):
    plan = make_report(spec, Hardware.from_vram(16), PlanRequest(engine="builtin", level="basic", concurrency=4)).plan
    assert plan.kv_cache_tokens == 4 * plan.max_model_len
    assert plan.terms["kv_cache"] == 4 * plan.max_model_len * 12288
    assert plan.terms["cuda_graphs"] == 0


def test_user_fraction_too_small_is_reported_with_the_value_to_use(spec):
    plan = make_report(
        spec, Hardware.from_vram(8), PlanRequest(engine="sglang", level="basic", mem_fraction_static=0.05)
    ).plan
    assert not plan.fits
    assert any("--mem-fraction-static" in p for p in plan.problems)


def test_shared_gpu_moves_auto_to_a_more_aggressive_level(spec):
    req = PlanRequest(engine="builtin")
    alone = make_report(spec, shared_h100(79), req).plan
    crowded = make_report(spec, shared_h100(3.5), req).plan
    levels = ["none", "basic", "aggressive", "extreme", "flash"]
    assert levels.index(crowded.level) > levels.index(alone.level)
    assert crowded.predicted_peak_bytes <= 3.5 * GIB


def test_nothing_fits_falls_back_to_flash_and_says_why(spec):
    report = make_report(spec, Hardware.from_vram(0.5), PlanRequest(engine="builtin"))
    assert report.chosen_level == "flash" and report.plan.predicted_peak_bytes == 0
    assert "extreme" in report.reason


def test_old_gpu_gets_float16_and_refuses_bfloat16(spec):
    t4 = Hardware.from_gpu(name="Tesla T4", total_bytes=15 * GIB, free_bytes=15 * GIB, gpu_count=1,
                           compute_capability=(7, 5))
    assert make_report(spec, t4, PlanRequest()).plan.dtype == "float16"


def test_cpu_plans_the_builtin_engine_in_float32():
    hw = Hardware.cpu(available_bytes=16 * GIB)
    report = make_report(default_spec(), hw, PlanRequest(engine="builtin"))
    # No CUDA context on a CPU; the processor, its work on an image and the loaded code share the
    # RAM the plan budgets.
    assert report.plan.dtype == "float32" and report.plan.terms["runtime"] > C.CPU_RUNTIME_BYTES
    assert report.plan.env.get("MINERU_DEVICE_MODE") == "cpu"


def test_cpu_plan_counts_the_heap_a_prefill_leaves_behind():
    # glibc's heap keeps what a prefill frees (measured ~1.9x the activations): a CPU plan's margin
    # is as large as its activations, a GPU's caching allocator gets its 10%.
    cpu = make_report(default_spec(), Hardware.cpu(available_bytes=16 * GIB), PlanRequest(engine="builtin")).plan
    gpu = make_report(default_spec(), Hardware.from_vram(24), PlanRequest(engine="builtin")).plan
    assert cpu.terms["margin"] == max(C.ALLOCATOR_MARGIN_MIN_BYTES, cpu.terms["activations"])
    assert gpu.terms["margin"] == max(C.ALLOCATOR_MARGIN_MIN_BYTES, int(0.10 * gpu.terms["activations"]))


def test_builtin_activations_are_one_requests_prefill_beside_the_rows_in_flight(spec):
    from mineru_fit.planner import terms as T

    # The engine prefills one request (one image) at a time while the other rows wait: a larger
    # batch adds its rows' logits and the cache's one-layer rebuild, not another image's prefill.
    hw = Hardware.from_vram(24)
    one = make_report(spec, hw, PlanRequest(engine="builtin", level="basic", concurrency=1)).plan
    eight = make_report(spec, hw, PlanRequest(engine="builtin", level="basic", concurrency=8)).plan
    assert (one.batch_size, eight.batch_size) == (1, 8) and one.max_image_pixels == eight.max_image_pixels
    image = T.vision_activation_bytes(spec, T.image_tokens(one.max_image_pixels, spec), 2)
    grew = eight.terms["activations"] - one.terms["activations"]
    assert grew == T.logits_bytes(spec, 7) + 2 * eight.terms["kv_cache"] // spec.text.num_layers
    assert grew < image and eight.terms["kv_cache"] == 8 * one.terms["kv_cache"]


def test_builtin_activations_hold_a_prompt_that_fills_the_context(spec):
    from mineru_fit.planner import terms as T

    # The engine accepts prompt + output up to max_model_len and prefills the prompt at once: a
    # text-only request (MinerU's cross-page table merge sends them) of a full context must fit.
    plan = make_report(spec, Hardware.from_vram(24), PlanRequest(engine="builtin", level="none")).plan
    assert plan.max_model_len == 32768
    text = T.llm_prefill_activation_bytes(spec, plan.max_model_len, 2)
    image = T.vision_activation_bytes(spec, T.image_tokens(plan.max_image_pixels, spec), 2)
    assert text > image and plan.terms["activations"] >= text + T.logits_bytes(spec, plan.batch_size)


def test_extreme_disables_cuda_graphs_in_every_engine(spec):
    hw = Hardware.from_vram(8)
    sg = make_report(spec, hw, PlanRequest(engine="sglang", level="extreme")).plan
    vl = make_report(spec, hw, PlanRequest(engine="vllm", level="extreme")).plan
    assert "--disable-cuda-graph" in sg.argv and sg.terms["cuda_graphs"] == 0
    assert "--enforce-eager" in vl.argv and vl.terms["cuda_graphs"] == 0
    assert sg.env["SGLANG_IMAGE_MAX_PIXELS"] == str(sg.max_image_pixels)
    assert f'{{"max_pixels": {vl.max_image_pixels}}}' in vl.argv


def test_builtin_sets_expandable_segments_unless_the_user_chose(spec):
    from mineru_fit.planner import plan_levels

    hw = Hardware.from_vram(8)
    mine = plan_levels(spec, hw, PlanRequest())[1]
    theirs = plan_levels(spec, hw, PlanRequest(), user_alloc_conf="max_split_size_mb:256")[1]
    assert mine.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert theirs.env["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:256"
