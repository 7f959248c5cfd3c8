"""Engine states from real-format /metrics text, and scraping that never crashes on a dead engine."""

from __future__ import annotations

import httpx
import pytest

from mineru_fit.errors import UsageError
from mineru_fit.monitor.engines import parse_metrics
from mineru_fit.monitor.scrape import engine_targets, metrics_url, scrape
from fixtures.monitor import metrics_text, mock_client, record, serve_metrics

URL = "http://127.0.0.1:30000/metrics"


def test_sglang_metrics_give_kv_use_queue_and_pool() -> None:
    state = parse_metrics(metrics_text("sglang_kv_high.prom"), URL)
    assert state.kind == "sglang" and state.reachable
    assert state.kv_cache_usage == pytest.approx(0.94)
    assert (state.requests_running, state.requests_waiting) == (12, 3)
    assert state.max_total_tokens == 428032
    assert state.requests_completed == 1342 and state.model == "opendatalab/MinerU2.5-2509-1.2B"


def test_older_sglang_counts_requests_from_the_latency_histogram() -> None:
    state = parse_metrics(metrics_text("sglang_old_idle.prom"), URL)
    assert state.requests_completed == 41 and state.max_total_tokens is None
    assert state.kv_cache_usage == 0.0 and state.requests_waiting == 0


def test_vllm_new_and_old_kv_names_are_both_read() -> None:
    new = parse_metrics(metrics_text("vllm_queue.prom"), URL)
    assert new.kind == "vllm" and new.kv_cache_usage == pytest.approx(0.35)
    assert (new.requests_running, new.requests_waiting) == (8, 5)
    assert new.requests_completed == 123  # stop + length + abort, the *_created gauge ignored
    assert new.memory_fraction == 0.5 and new.max_total_tokens == 22000 * 16
    old = parse_metrics(metrics_text("vllm_old_names.prom"), URL)
    assert old.kv_cache_usage == pytest.approx(0.97) and old.requests_running == 4


def test_builtin_metrics_give_memory_oom_counts_and_info() -> None:
    state = parse_metrics(metrics_text("builtin_oom.prom"), URL)
    assert state.kind == "builtin" and state.level == "basic" and state.max_model_len == 8192
    assert state.oom_events == {"split": 9, "shrink": 3, "rejected": 2} and state.oom_total == 14
    assert state.memory_cap_bytes == 21743271936 and state.reserved_bytes == 21474836480
    assert state.generation_tokens == 48211
    assert state.requests_completed == 77 and state.batch_limit == 2  # 503 refusals are not completions


def test_text_that_is_not_prometheus_is_a_state_not_a_crash() -> None:
    state = parse_metrics("<html><body>Swagger UI</body></html>", URL)
    assert not state.reachable and state.error.startswith("bad metrics")


def test_record_names_the_engine_when_metrics_do_not() -> None:
    rec = record("sglang", "basic", 4321)
    state = parse_metrics("# nothing here\n", URL, rec)
    assert state.kind == "sglang" and state.name == "sglang" and state.current_level == "basic"


def test_scrape_reports_refused_404_and_ok() -> None:
    with mock_client({URL: metrics_text("vllm_queue.prom"), "http://127.0.0.1:30001/metrics": 404}) as client:
        ok = scrape(client, URL)
        missing = scrape(client, "http://127.0.0.1:30001/metrics", record("sglang", "none", 7))
        refused = scrape(client, "http://127.0.0.1:30002/metrics")
    assert ok.reachable and ok.requests_waiting == 5
    assert missing.error == "unreachable: HTTP 404 from http://127.0.0.1:30001/metrics" and missing.kind == "sglang"
    assert refused.error.startswith("unreachable: connection refused")


def test_scrape_over_real_http_and_a_timeout() -> None:
    with serve_metrics({"/metrics": metrics_text("sglang_kv_high.prom")}) as base:
        with httpx.Client(timeout=1.0) as client:
            state = scrape(client, metrics_url(base))
    assert state.kv_cache_usage == pytest.approx(0.94)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with httpx.Client(transport=httpx.MockTransport(slow)) as client:
        assert "no answer within the timeout" in scrape(client, URL).error


@pytest.mark.parametrize("typed, expected", [
    ("http://127.0.0.1:30000", "http://127.0.0.1:30000/metrics"),
    ("127.0.0.1:8000/", "http://127.0.0.1:8000/metrics"),
    ("http://gpu-box:30000/metrics", "http://gpu-box:30000/metrics"),
    ("https://h/custom/path", "https://h/custom/path"),
])
def test_engine_url_forms(typed: str, expected: str) -> None:
    assert metrics_url(typed) == expected


def test_bad_engine_url_is_a_usage_error_and_targets_are_deduplicated() -> None:
    with pytest.raises(UsageError, match="not an http"):
        metrics_url("ftp://x/metrics")
    rec = record("vllm", "basic", 11, port=8000)
    targets = engine_targets([rec], ["http://127.0.0.1:8000", "127.0.0.1:9000"])
    assert targets == [("http://127.0.0.1:8000/metrics", rec), ("http://127.0.0.1:9000/metrics", None)]
