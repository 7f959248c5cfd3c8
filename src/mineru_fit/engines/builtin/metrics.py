"""Prometheus metrics of the built-in engine (one registry per server)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily

from mineru_fit.engines.builtin.batcher import BatchObserver
from mineru_fit.engines.builtin.jobs import Outcome

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# The *_created series add nothing a dashboard uses and double the exposition.
disable_created_metrics()


class MemoryCollector:
    """GPU memory read at scrape time (torch's caching allocator), only on CUDA."""

    def __init__(self, read: Callable[[], Optional[dict[str, int]]]) -> None:
        self.read = read

    def collect(self):  # noqa: ANN201 (prometheus_client protocol)
        values = self.read()
        if not values:
            return
        for name, help_text in (
            ("allocated", "bytes held by tensors now"),
            ("reserved", "bytes held by the caching allocator now"),
            ("peak", "most bytes the caching allocator has held"),
            ("cap", "the allocator cap from --mem-fraction-static"),
        ):
            if name in values:
                metric = "mineru_fit_memory_cap_bytes" if name == "cap" else f"mineru_fit_gpu_memory_{name}_bytes"
                family = GaugeMetricFamily(metric, help_text)
                family.add_metric([], float(values[name]))
                yield family


class EngineMetrics(BatchObserver):
    def __init__(self, *, info: dict[str, str], kv_capacity_tokens: int,
                 memory: Optional[Callable[[], Optional[dict[str, int]]]] = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.running = Gauge("mineru_fit_requests_running", "requests in flight (decoding together)", registry=r)
        self.waiting = Gauge("mineru_fit_requests_waiting", "requests queued for a batch", registry=r)
        self.requests = Counter("mineru_fit_requests", "answered requests by HTTP status", ["status"], registry=r)
        self.batch_size = Histogram("mineru_fit_batch_size", "requests in flight, observed each time a request joins or leaves", buckets=BATCH_BUCKETS, registry=r)
        self.batch_cap = Gauge("mineru_fit_batch_cap", "largest batch allowed now (lowered after OOM)", registry=r)
        self.prompt_tokens = Counter("mineru_fit_prompt_tokens", "prompt tokens processed", registry=r)
        self.generation_tokens = Counter("mineru_fit_generation_tokens", "tokens generated", registry=r)
        self.tokens_per_s = Gauge("mineru_fit_generation_tokens_per_second", "tokens/s over the last second of work", registry=r)
        self.kv_usage = Gauge("mineru_fit_kv_cache_usage_ratio",
                              "share of the planned KV cache (batch × context) the requests in flight may fill", registry=r)
        self.oom_events = Counter("mineru_fit_oom_events", "out-of-memory events by action", ["action"], registry=r)
        for action in ("split", "shrink", "rejected"):
            self.oom_events.labels(action=action)
        self.info = Gauge("mineru_fit_info", "engine, level and limits", list(info), registry=r)
        self.info.labels(**info).set(1)
        self.kv_capacity_tokens = max(1, kv_capacity_tokens)
        self._window_tokens = 0
        self._window_s = 0.0
        if memory is not None:
            r.register(MemoryCollector(memory))

    # BatchObserver
    def queued(self, waiting: int) -> None:
        self.waiting.set(waiting)

    def batch_started(self, size: int, tokens: int) -> None:
        self.running.set(size)
        if size:
            self.batch_size.observe(size)
        # The most KV the rows in flight can fill (prompts + their output caps) over the plan's KV.
        self.kv_usage.set(min(1.0, tokens / self.kv_capacity_tokens))

    def generated(self, tokens: int, seconds: float) -> None:
        # Counted as produced, so the counter stops growing the moment a request is dropped.
        self.generation_tokens.inc(tokens)
        self._window_tokens += tokens
        self._window_s += seconds
        if self._window_s >= 1.0:
            self.tokens_per_s.set(self._window_tokens / self._window_s)
            self._window_tokens, self._window_s = 0, 0.0

    def batch_finished(self, size: int, outcomes: list[Outcome], seconds: float) -> None:
        self.prompt_tokens.inc(sum(o.prompt_tokens for o in outcomes if o.ok))

    def oom(self, action: str) -> None:
        self.oom_events.labels(action=action).inc()

    def cap_changed(self, cap: int) -> None:
        self.batch_cap.set(cap)

    def answered(self, status: int) -> None:
        self.requests.labels(status=str(status)).inc()

    def snapshot(self) -> dict[str, Any]:
        """A few numbers for tests and logs."""
        return {m.name: [(s.labels, s.value) for s in m.samples] for m in self.registry.collect()}
