"""Reading SGLang's and vLLM's startup logs: the memory they report and why they failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mineru_fit.engines import sglang, vllm
from mineru_fit.engines.startlog import classify_failure, parse_startup
from mineru_fit.units import GIB

LOGS = Path(__file__).parent / "fake_engine" / "logs"


def lines(name: str) -> list[str]:
    return [line for line in (LOGS / name).read_text().splitlines() if line != "@@SERVE@@"]


def gib(n_bytes: int | None) -> float:
    assert n_bytes is not None
    return round(n_bytes / GIB, 2)


def test_sglang_start_log_gives_weights_kv_graphs_and_free_memory():
    m = parse_startup(lines("sglang_start.log"), sglang.STARTUP_PATTERNS, sglang.READY_MARKERS)
    assert gib(m.weights_bytes) == 2.21 and gib(m.kv_cache_bytes) == 0.76 and m.kv_cache_tokens == 65536
    assert gib(m.cuda_graph_bytes) == 0.09 and gib(m.free_after_start_bytes) == 4.41
    assert m.max_running_requests == 8 and m.context_length == 8192 and m.ready
    assert any(line.startswith("[2026-11-20 10:00:07] Load weight end.") for line in m.lines)


def test_vllm_start_log_gives_weights_kv_and_graphs():
    m = parse_startup(lines("vllm_start.log"), vllm.STARTUP_PATTERNS, vllm.READY_MARKERS)
    assert gib(m.weights_bytes) == 2.16 and gib(m.kv_cache_bytes) == 0.75 and m.kv_cache_tokens == 65536
    assert gib(m.cuda_graph_bytes) == 0.09 and m.context_length == 8192 and m.max_concurrency == 8.0 and m.ready


@pytest.mark.parametrize("line, field, value", [
    ("[2026-03-11 13:53:23 TP0] KV Cache is allocated. #tokens: 383872, KV size: 19.36 GB", "kv_cache_bytes", 19.36),
    ("Capture target decode CUDA graph end. elapsed=25.74 s, mem usage=2.66 GB, avail mem=24.45 GB.",
     "cuda_graph_bytes", 2.66),
    ("[2025-08-13 14:34:24 TP0] Load weight end. type=DeepseekV3ForCausalLM, dtype=torch.bfloat16, "
     "avail mem=80.84 GB, mem usage=94.50 GB.", "weights_bytes", 94.5),
])
def test_sglang_line_variants(line, field, value):
    assert gib(getattr(parse_startup([line], sglang.STARTUP_PATTERNS), field)) == value


def test_vllm_newer_weights_line():
    m = parse_startup(["Model loading took 55.22 GiB memory and 20.3s"], vllm.STARTUP_PATTERNS)
    assert gib(m.weights_bytes) == 55.22


def test_first_rank_wins_with_tensor_parallelism():
    tp = ["[TP0] KV Cache is allocated. #tokens: 1000, K size: 1.00 GB, V size: 1.00 GB",
          "[TP1] KV Cache is allocated. #tokens: 999, K size: 3.00 GB, V size: 3.00 GB"]
    m = parse_startup(tp, sglang.STARTUP_PATTERNS)
    assert m.kv_cache_tokens == 1000 and gib(m.kv_cache_bytes) == 2.0


@pytest.mark.parametrize("engine, log, kind", [
    (sglang, "sglang_oom.log", "oom"), (sglang, "sglang_kv.log", "kv_cache"),
    (vllm, "vllm_oom.log", "oom"), (vllm, "vllm_kv.log", "kv_cache"),
])
def test_recorded_failures_are_classified(engine, log, kind):
    text = lines(log)
    m = parse_startup(text, engine.STARTUP_PATTERNS)
    failure = classify_failure(text, engine.FAILURE_PATTERNS, weights_loaded=m.weights_loaded, returncode=1)
    assert failure.kind == kind and failure.memory


@pytest.mark.parametrize("line, kind, memory", [
    ("ValueError: To serve at least one request with the models's max seq len (32768), (5.0 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (0.53 GiB).", "kv_cache", True),
    ("ValueError: Free memory on device (6.9/8.0 GiB) on startup is less than desired GPU memory utilization "
     "(0.9, 7.2 GiB).", "gpu_busy", True),
    ("OSError: [Errno 98] Address already in use", "port_in_use", False),
    ("vllm: error: unrecognized arguments: --no-such-flag", "usage", False),
])
def test_vllm_failure_lines(line, kind, memory):
    failure = classify_failure(["INFO starting", line], vllm.FAILURE_PATTERNS, weights_loaded=True, returncode=1)
    assert (failure.kind, failure.memory) == (kind, memory)


def test_an_unnamed_failure_before_the_weights_is_a_load_failure_after_them_a_crash():
    text = ["Load weight begin. avail mem=7.62 GB", "ValueError: fp8 quantization is not supported on this GPU"]
    before = classify_failure(text, sglang.FAILURE_PATTERNS, weights_loaded=False, returncode=1)
    after = classify_failure(text, sglang.FAILURE_PATTERNS, weights_loaded=True, returncode=1)
    assert (before.kind, before.memory) == ("load", True) and "fp8 quantization" in before.line
    assert (after.kind, after.memory) == ("crash", False)
