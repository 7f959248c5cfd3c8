"""Engine states from Prometheus text: our built-in server, SGLang and vLLM. Pure: text in, value out.

Metric names, per engine:
- built-in: mineru_fit_requests_running/_waiting, mineru_fit_kv_cache_usage_ratio,
  mineru_fit_gpu_memory_{allocated,reserved,peak}_bytes, mineru_fit_memory_cap_bytes,
  mineru_fit_oom_events_total{action}, mineru_fit_generation_tokens_total,
  mineru_fit_requests_total{status}, mineru_fit_batch_cap, mineru_fit_info{...}.
- SGLang (--enable-metrics): sglang:token_usage, sglang:num_running_reqs, sglang:num_queue_reqs,
  sglang:max_total_num_tokens, sglang:max_running_requests, sglang:generation_tokens_total,
  sglang:num_requests_total.
- vLLM: vllm:kv_cache_usage_perc (older: vllm:gpu_cache_usage_perc; both 0..1 despite the
  name), vllm:num_requests_running/_waiting, vllm:request_success_total,
  vllm:generation_tokens_total, vllm:cache_config_info{gpu_memory_utilization,num_gpu_blocks,block_size}.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

from prometheus_client.parser import text_string_to_metric_families

from mineru_fit.monitor.snapshot import EngineState
from mineru_fit.runrecords import RunRecord

Samples = dict[str, list[tuple[dict[str, str], float]]]

# A series family's prefix says which engine wrote it.
_PREFIXES = (("mineru_fit_", "builtin"), ("sglang:", "sglang"), ("vllm:", "vllm"))


def parse_samples(text: str) -> Samples:
    """Every sample by name (counters keep their _total); NaN samples are dropped. ValueError if not Prometheus text."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            value = float(sample.value)
            if math.isnan(value):
                continue
            out.setdefault(sample.name, []).append((dict(sample.labels), value))
    return out


def engine_kind(samples: Samples) -> str:
    """builtin, sglang or vllm by the metric names present; unknown when none of ours."""
    for prefix, kind in _PREFIXES:
        if any(name.startswith(prefix) for name in samples):
            return kind
    return "unknown"


def parse_metrics(text: str, metrics_url: str, record: Optional[RunRecord] = None) -> EngineState:
    """The EngineState a /metrics body describes; a body that is not Prometheus text is a state too."""
    try:
        samples = parse_samples(text)
    except ValueError as exc:
        return EngineState(metrics_url=metrics_url, kind=record.engine if record else "unknown", record=record,
                           error=f"bad metrics: {exc}")
    kind = engine_kind(samples)
    base = EngineState(metrics_url=metrics_url, kind=kind, record=record)
    if kind == "builtin":
        return _builtin(samples, base)
    if kind == "sglang":
        return _sglang(samples, base)
    if kind == "vllm":
        return _vllm(samples, base)
    return replace(base, kind=record.engine if record else "unknown")


def _sum(samples: Samples, *names: str) -> Optional[float]:
    """Sum over all series of the first name present (dp replicas add up)."""
    for name in names:
        if name in samples:
            return sum(value for _, value in samples[name])
    return None


def _max(samples: Samples, *names: str) -> Optional[float]:
    """The fullest series of the first name present (the replica nearest its limit)."""
    for name in names:
        if name in samples:
            return max(value for _, value in samples[name])
    return None


def _int(value: Optional[float]) -> Optional[int]:
    return None if value is None else int(value)


def _label(samples: Samples, name: str, label: str) -> Optional[str]:
    for labels, _ in samples.get(name, ()):
        if labels.get(label):
            return labels[label]
    return None


def _builtin(samples: Samples, base: EngineState) -> EngineState:
    oom: dict[str, int] = {}
    for labels, value in samples.get("mineru_fit_oom_events_total", ()):
        action = labels.get("action", "unknown")
        oom[action] = oom.get(action, 0) + int(value)
    max_len = _label(samples, "mineru_fit_info", "max_model_len")
    return replace(
        base,
        model=_label(samples, "mineru_fit_info", "model"),
        level=_label(samples, "mineru_fit_info", "level"),
        max_model_len=int(max_len) if max_len and max_len.isdigit() else None,
        requests_running=_int(_sum(samples, "mineru_fit_requests_running")),
        requests_waiting=_int(_sum(samples, "mineru_fit_requests_waiting")),
        kv_cache_usage=_max(samples, "mineru_fit_kv_cache_usage_ratio"),
        allocated_bytes=_int(_sum(samples, "mineru_fit_gpu_memory_allocated_bytes")),
        reserved_bytes=_int(_sum(samples, "mineru_fit_gpu_memory_reserved_bytes")),
        peak_bytes=_int(_sum(samples, "mineru_fit_gpu_memory_peak_bytes")),
        memory_cap_bytes=_int(_sum(samples, "mineru_fit_memory_cap_bytes")),
        oom_events=oom,
        generation_tokens=_sum(samples, "mineru_fit_generation_tokens_total"),
        batch_limit=_int(_max(samples, "mineru_fit_batch_cap")),
        requests_completed=_answered(samples),
    )


def _answered(samples: Samples) -> Optional[float]:
    # Only successful answers count as completed requests; 4xx/5xx are refusals.
    series = samples.get("mineru_fit_requests_total")
    if series is None:
        return None
    return sum(value for labels, value in series if labels.get("status", "").startswith("2"))


def _sglang(samples: Samples, base: EngineState) -> EngineState:
    return replace(
        base,
        model=_label(samples, "sglang:token_usage", "model_name") or _label(samples, "sglang:num_running_reqs", "model_name"),
        requests_running=_int(_sum(samples, "sglang:num_running_reqs")),
        requests_waiting=_int(_sum(samples, "sglang:num_queue_reqs")),
        kv_cache_usage=_max(samples, "sglang:token_usage"),
        max_total_tokens=_int(_max(samples, "sglang:max_total_num_tokens")),
        batch_limit=_int(_max(samples, "sglang:max_running_requests")),
        generation_tokens=_sum(samples, "sglang:generation_tokens_total"),
        # Older SGLang has no request counter: the end-to-end latency histogram counts finished requests.
        requests_completed=_sum(samples, "sglang:num_requests_total", "sglang:e2e_request_latency_seconds_count"),
    )


def _vllm(samples: Samples, base: EngineState) -> EngineState:
    fraction = _label(samples, "vllm:cache_config_info", "gpu_memory_utilization")
    blocks = _label(samples, "vllm:cache_config_info", "num_gpu_blocks")
    block_size = _label(samples, "vllm:cache_config_info", "block_size")
    tokens = int(blocks) * int(block_size) if blocks and block_size and blocks.isdigit() and block_size.isdigit() else None
    return replace(
        base,
        model=_label(samples, "vllm:num_requests_running", "model_name"),
        requests_running=_int(_sum(samples, "vllm:num_requests_running")),
        requests_waiting=_int(_sum(samples, "vllm:num_requests_waiting")),
        kv_cache_usage=_max(samples, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        max_total_tokens=tokens,
        memory_fraction=_float(fraction),
        generation_tokens=_sum(samples, "vllm:generation_tokens_total"),
        requests_completed=_sum(samples, "vllm:request_success_total", "vllm:e2e_request_latency_seconds_count"),
    )


def _float(text: Optional[str]) -> Optional[float]:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None
