"""The planner against public engine startup logs (tests/data/engine_logs): the issue's must-holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import planner_vs_logs as bench  # noqa: E402

from mineru_fit.planner import constants as C  # noqa: E402
from mineru_fit.planner import terms as T  # noqa: E402
from mineru_fit.planner.logbench import summarize  # noqa: E402

GIB = 1024**3


@pytest.fixture(scope="module")
def records():
    return bench.load_records()


@pytest.fixture(scope="module")
def results(records):
    return bench.run(records)


def test_every_record_names_its_public_source_and_quotes_the_log(records):
    assert len(records) >= 25 and {r.engine for r in records} == {"vllm", "sglang"}
    for r in records:
        s = r.source
        assert (s.repo and s.path) or s.url or s.issue or s.index_id, r.id
        assert r.excerpt and all(line.strip() for line in r.excerpt), r.id
        # The figures compared are printed in the quoted lines, not typed in from elsewhere.
        text = "\n".join(r.excerpt)
        if r.logged.weights_gib is not None:
            assert str(r.logged.weights_gib).rstrip("0") in text, r.id
        if r.logged.kv_tokens is not None:  # vLLM prints "33,824 tokens", SGLang "#tokens: 20480"
            assert f"{r.logged.kv_tokens:,}" in text or f"#tokens: {r.logged.kv_tokens}" in text, r.id
        if r.logged.fraction is not None:
            assert str(r.logged.fraction) in text, r.id
        assert r.full_figures == (r.exclusion is None), r.id


def test_logged_kv_tokens_are_the_logged_kv_bytes_over_the_planners_bytes_per_token(records):
    # Every log that prints both the KV bytes and the KV tokens checks the per-token size the
    # planner derives from the config (layers x KV heads x head_dim x K and V x 2 bytes), whatever
    # its other inputs: the GiB figure is printed with two decimals and the pool is cut in blocks.
    # SGLang prints K and V apart ("K size: 0.55 GB, V size: 0.55 GB"): two rounded figures.
    both = [r for r in records if r.logged.kv_tokens and r.logged.kv_gib and r.logged.kv_gib > 0]
    assert len(both) >= 8 and {r.engine for r in both} == {"vllm", "sglang"}
    for r in both:
        per_token = T.kv_bytes_per_token(bench.spec_for(r), 2, r.inputs.tp_size)
        rounded = 0.01 if r.engine == "sglang" else 0.005
        slack = rounded * GIB + C.VLLM_BLOCK_TOKENS * per_token
        assert abs(r.logged.kv_tokens * per_token - r.logged.kv_gib * GIB) <= slack, r.id


def test_full_figure_records_know_every_input_and_say_how(records):
    full = [r for r in records if r.full_figures]
    assert {r.engine for r in full} == {"vllm", "sglang"}
    for r in full:
        inputs = r.inputs.model_dump()
        if r.engine == "vllm":
            needed = ("total_gib", "gpu_memory_utilization", "max_model_len", "max_num_batched_tokens",
                      "max_num_seqs", "video_profiled")
            said = ("total_gib", "gpu_memory_utilization", "max_model_len", "max_num_batched_tokens")
        else:
            # SGLang's pool needs the free memory it measured and its fraction: the user's, or its
            # default for the card (the card's capacity then).
            needed = ("free_at_start_gib",) + (("gpu_mem_mib",) if inputs["mem_fraction_static"] is None else ())
            said = needed + ("mem_fraction_static", "engine_version")
        for key in needed:
            assert inputs[key] is not None, (r.id, key)
        for key in said:
            assert key in r.reliability, (r.id, key)
        assert r.engine_version != "unknown"


def test_weights_within_one_percent_of_every_logged_load(results):
    checked = [c for c in results if c.weights_error is not None]
    assert len(checked) >= 10
    worst = max(checked, key=lambda c: abs(c.weights_error))
    assert abs(worst.weights_error) <= 0.01, worst


def test_every_logged_memory_failure_is_predicted_not_to_fit(results):
    failed = [c for c in results if c.logged_failed]
    assert len(failed) >= 4
    assert all(c.predicted_fits is False for c in failed), [c.id for c in failed if c.predicted_fits is not False]


def test_no_prediction_above_a_logged_kv_cache(results):
    # An over-prediction is an OOM for a user: never more than 3% above what the engine logged.
    for c in results:
        for err, logged in ((c.kv_tokens_error, c.logged_kv_tokens), (c.kv_gib_error, c.logged_kv_gib)):
            if err is not None and logged and logged > 0:
                assert err <= 0.03, (c.id, err)


def test_kv_tokens_within_two_percent_on_the_full_figure_records_per_engine(results):
    summary = summarize(results)
    for engine in ("vllm", "sglang"):
        row = summary["by_engine"][engine]
        assert row["full_figure_records"] >= 2, engine
        assert row["kv_tokens_mape"] is not None and row["kv_tokens_mape"] <= 0.02, engine


def test_sglang_fraction_per_version_matches_what_it_logged(results):
    # SGLang prints its fraction with three decimals ("reduce ... to 0.792") or in full in ServerArgs;
    # the rule of each release (default by card, multimodal shrink) must land on it.
    checked = [c for c in results if c.logged_fraction is not None]
    assert len({c.engine_version for c in checked}) >= 4
    for c in checked:
        assert c.predicted_fraction is not None, c.id
        assert abs(c.predicted_fraction - c.logged_fraction) <= 0.0005 + 1e-9, (c.id, c.predicted_fraction)


def test_a_pool_cut_by_max_total_tokens_is_not_counted_but_holds_the_cut(results):
    capped = [c for c in results if c.kv_capped]
    assert capped
    for c in capped:
        assert c.kv_tokens_error is None and c.predicted_kv_tokens == c.logged_kv_tokens, c.id


def test_committed_results_are_this_code_and_these_logs(records, results):
    committed = json.loads((ROOT / "benchmarks" / "results" / "planner_vs_logs.json").read_text())
    fresh = bench.report(records, results)
    assert committed["summary"] == json.loads(json.dumps(fresh["summary"]))
    assert [row["id"] for row in committed["per_log"]] == [c.id for c in results]
