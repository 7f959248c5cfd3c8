"""Engine argv per engine and level, checked against the engines' real argument names per version."""

from __future__ import annotations

import itertools

import pytest

from mineru_fit.engines.flags import FlagTable, fit_argv, installed_version, load_flags
from mineru_fit.engines.launch import engine_command
from mineru_fit.engines.vllm import LOGITS_PROCESSOR, VlUtils, logits_processor_decision
from mineru_fit.errors import EngineFlagError
from mineru_fit.models import default_spec
from mineru_fit.planner import Hardware, PlanRequest, plan_levels

MODEL = "opendatalab/MinerU2.5-2509-1.2B"
LAUNCHER = ["ENGINE"]
VL_UTILS = VlUtils(version="2.0.7", exports_processor=True, vllm_requirement="vllm<0.29.0,>=0.19.1")
LEVELS = ["none", "basic", "aggressive", "extreme"]


@pytest.fixture(scope="module")
def spec():
    return default_spec()


def plans(spec, engine: str, vram: float, gpus: int = 1, **flags):
    return {p.level: p for p in plan_levels(spec, Hardware.from_vram(vram, gpu_count=gpus),
                                            PlanRequest(engine=engine, **flags))}


def command(plan, installed=None, **kw):
    return engine_command(plan, installed=installed, launcher=LAUNCHER, vl_utils=VL_UTILS, environ={}, **kw)


# --- golden argv: the newest version we hold, not installed here --------------------------

def test_sglang_extreme_on_an_8_gib_card(spec):
    cmd = command(plans(spec, "sglang", 8)["extreme"])
    assert cmd.flag_version == "0.5.10"
    assert list(cmd.argv) == LAUNCHER + [
        "--model-path", MODEL, "--host", "127.0.0.1", "--port", "30000", "--dtype", "bfloat16",
        "--context-length", "2048", "--mem-fraction-static", "0.13", "--max-total-tokens", "2048",
        "--max-running-requests", "1", "--chunked-prefill-size", "2048", "--quantization", "bitsandbytes",
        "--load-format", "bitsandbytes", "--kv-cache-dtype", "fp8_e5m2", "--disable-cuda-graph",
        "--enable-metrics", "--disable-piecewise-cuda-graph",
    ]
    assert dict(cmd.env) == {"SGLANG_IMAGE_MAX_PIXELS": "1073296"}  # the 1036×1036 layout page, whole


def test_sglang_basic_pins_kv_tokens_and_graph_batch(spec):
    cmd = command(plans(spec, "sglang", 8)["basic"])
    assert list(cmd.argv) == LAUNCHER + [
        "--model-path", MODEL, "--host", "127.0.0.1", "--port", "30000", "--dtype", "bfloat16",
        "--context-length", "8192", "--mem-fraction-static", "0.42", "--max-total-tokens", "65536",
        "--max-running-requests", "8", "--chunked-prefill-size", "2080", "--cuda-graph-max-bs", "8",
        "--enable-metrics",
    ]
    assert dict(cmd.env) == {"SGLANG_IMAGE_MAX_PIXELS": "1605632"}


def test_vllm_basic_on_a_24_gib_card(spec):
    cmd = command(plans(spec, "vllm", 24)["basic"])
    assert cmd.flag_version == "0.26.0"
    assert list(cmd.argv) == LAUNCHER + [
        MODEL, "--host", "127.0.0.1", "--port", "30000", "--dtype", "bfloat16", "--max-model-len", "8192",
        "--gpu-memory-utilization", "0.16", "--kv-cache-memory-bytes", "805306368", "--max-num-seqs", "8",
        "--max-num-batched-tokens", "2080", "--max-cudagraph-capture-size", "8",
        "--limit-mm-per-prompt", '{"image": 1, "video": 0}', "--mm-processor-kwargs", '{"max_pixels": 1605632}',
        "--logits-processors", LOGITS_PROCESSOR,
    ]
    assert dict(cmd.env) == {}


def test_vllm_extreme_is_eager_4bit_with_fp8_kv(spec):
    argv = list(command(plans(spec, "vllm", 24)["extreme"]).argv)
    for pair in (["--quantization", "bitsandbytes"], ["--kv-cache-dtype", "fp8"], ["--max-num-seqs", "1"],
                 ["--max-model-len", "2048"], ["--kv-cache-memory-bytes", "12582912"]):
        assert argv[argv.index(pair[0]):argv.index(pair[0]) + 2] == pair
    assert "--enforce-eager" in argv and "--max-cudagraph-capture-size" not in argv


@pytest.mark.parametrize("engine", ["sglang", "vllm"])
def test_every_flag_of_every_level_is_a_real_flag_of_every_supported_version(spec, engine):
    # A flag renamed in the data (or misspelt in planner/commands.py) fails here.
    flags = load_flags(engine)
    configs = [dict(vram=8), dict(vram=24), dict(vram=80, gpus=4, tp_size=2, dp_size=2),
               dict(vram=8, load_in_8bit=True), dict(vram=12, kv_cache_dtype="fp8", max_model_len=4096)]
    for config, table in itertools.product(configs, flags.tables):
        config = dict(config)
        vram, gpus = config.pop("vram"), config.pop("gpus", 1)
        for plan in plans(spec, engine, vram, gpus, **config).values():
            if plan.engine == "flash":
                continue
            cmd = command(plan, installed=table.version)
            emitted = [t for t in cmd.argv if t.startswith("--")]
            assert set(emitted) <= table.flags, (table.version, set(emitted) - table.flags)
            assert set(cmd.env) <= table.env


def test_tensor_and_data_parallel_map_to_each_engines_names(spec):
    sg = list(command(plans(spec, "sglang", 80, 4, tp_size=2, dp_size=2)["basic"]).argv)
    vl = list(command(plans(spec, "vllm", 80, 4, tp_size=2, dp_size=2)["basic"]).argv)
    assert sg[sg.index("--tp-size") + 1] == "2" and sg[sg.index("--dp-size") + 1] == "2"
    assert vl[vl.index("--tensor-parallel-size") + 1] == "2" and vl[vl.index("--data-parallel-size") + 1] == "2"


def test_pass_through_flags_come_last_and_untouched(spec):
    extra = ["--enable-torch-compile", "--some-future-flag", "3"]
    cmd = command(plans(spec, "sglang", 8)["basic"], extra_args=extra)
    assert list(cmd.argv[-3:]) == extra


# --- versions -------------------------------------------------------------------------------

def test_older_sglang_has_no_piecewise_graphs_to_turn_off(spec):
    cmd = command(plans(spec, "sglang", 8)["extreme"], installed="0.5.4.post1")
    assert cmd.flag_version == "0.5.4" and "--disable-piecewise-cuda-graph" not in cmd.argv
    assert "--disable-cuda-graph" in cmd.argv


def test_a_version_newer_than_we_hold_is_checked_against_the_newest_and_says_so(spec):
    cmd = command(plans(spec, "vllm", 24)["basic"], installed="0.33.0")
    assert cmd.flag_version == "0.26.0"
    assert "newer than the newest version whose flags we hold" in cmd.notes[0]


def test_a_version_older_than_we_support_is_refused():
    with pytest.raises(EngineFlagError, match=r"older than the oldest version we support \(0\.11\.1\).*pip install"):
        load_flags("vllm").table_for("0.9.2")


def test_a_flag_the_version_lacks_is_refused_naming_the_alternative():
    flags = load_flags("vllm")
    old = FlagTable("vllm", "0.10.1.1", "test", flags.newest.flags - {"--kv-cache-memory-bytes"}, frozenset())
    with pytest.raises(EngineFlagError) as info:
        fit_argv(["m", "--kv-cache-memory-bytes", "1024"], old, flags)
    message = str(info.value)
    assert "vLLM 0.10.1.1 has no --kv-cache-memory-bytes" in message and "--level none" in message
    assert "\n" not in message


def test_a_flag_spelt_differently_in_that_version_is_renamed():
    flags = load_flags("vllm")
    old = FlagTable("vllm", "0.10.2", "test",
                    (flags.newest.flags - {"--max-cudagraph-capture-size"}) | {"--cuda-graph-sizes"}, frozenset())
    argv, notes = fit_argv(["m", "--max-cudagraph-capture-size", "8", "--enforce-eager"], old, flags)
    assert argv == ["m", "--cuda-graph-sizes", "8", "--enforce-eager"]
    assert "spells --max-cudagraph-capture-size as --cuda-graph-sizes" in notes[0]


def test_every_version_table_names_its_source():
    for engine in ("sglang", "vllm"):
        flags = load_flags(engine)
        assert [t.version for t in flags.tables] == sorted((t.version for t in flags.tables),
                                                           key=lambda v: tuple(map(int, v.split("."))))
        for table in flags.tables:
            assert table.source and "--port" in table.flags and "--host" in table.flags


def test_installed_version_comes_from_package_metadata():
    assert installed_version("typer")
    assert installed_version("no-such-distribution-mineru-fit") is None


# --- MinerU's logits processor ---------------------------------------------------------------

def _decide(version="0.26.0", vl=VL_UTILS, cc=(8, 9), environ=None):
    return logits_processor_decision(version, load_flags("vllm").newest, vl, cc, environ or {})


def test_logits_processor_on_when_mineru_vl_utils_supports_this_vllm():
    assert _decide() == (True, f"MinerU's no-repeat-ngram logits processor on ({LOGITS_PROCESSOR})")


@pytest.mark.parametrize("kw, why", [
    (dict(vl=None), "mineru-vl-utils"),
    (dict(version="0.11.1"), "needs vllm<0.29.0,>=0.19.1"),
    (dict(environ={"VLLM_USE_V1": "0"}), "VLLM_USE_V1=0"),
    (dict(version="0.10.0", vl=VlUtils("1.0", True, None)), "older than 0.10.1"),
    (dict(version="0.10.1", vl=VlUtils("1.0", True, None), cc=(7, 5)), "compute capability below 8.0"),
])
def test_logits_processor_off_says_why(kw, why):
    on, reason = _decide(**kw)
    assert not on and why in reason
