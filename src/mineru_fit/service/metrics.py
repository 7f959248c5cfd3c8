"""What /metrics says about the parse service, in Prometheus' text format.

Counters start at zero with each process (as Prometheus expects); queue depth and running jobs
are read at scrape time; pages/s is the rate over the last minute.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterator

RATE_WINDOW_S = 60.0


class PageRate:
    """Pages settled per second over a sliding window."""

    def __init__(self, window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._times: deque[float] = deque()

    def add(self, n: int = 1) -> None:
        now = self.clock()
        self._times.extend([now] * n)
        self._trim(now)

    def per_second(self) -> float:
        now = self.clock()
        self._trim(now)
        return len(self._times) / self.window_s

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()


class ServiceMetrics:
    """Counters the service bumps, and a registry that also reads live gauges from `gauges()`."""

    def __init__(self, gauges: Callable[[], dict[str, float]]) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        self.jobs = Counter("mineru_fit_api_jobs_finished", "Jobs finished, by outcome", ["status"],
                            registry=self.registry)
        self.pages = Counter("mineru_fit_api_pages", "Pages settled, by outcome", ["outcome"], registry=self.registry)
        self.accepted = Counter("mineru_fit_api_jobs_accepted", "Jobs accepted", registry=self.registry)
        self.refused = Counter("mineru_fit_api_requests_refused", "Submissions refused, by HTTP status", ["status"],
                               registry=self.registry)
        self.worker_restarts = Counter("mineru_fit_api_worker_crashes", "Worker processes that ended mid-job",
                                       registry=self.registry)
        self.rate = PageRate()
        self.registry.register(_Gauges(gauges, self.rate))

    def page(self, ok: bool) -> None:
        self.pages.labels("converted" if ok else "failed").inc()
        self.rate.add()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Gauges:
    """A collector that asks the service for its numbers when scraped."""

    def __init__(self, gauges: Callable[[], dict[str, float]], rate: PageRate) -> None:
        self.gauges = gauges
        self.rate = rate

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import GaugeMetricFamily

        values = self.gauges()
        described = {
            "queued": "Jobs waiting for a worker",
            "running": "Jobs being parsed now",
            "workers": "Jobs parsed at once at most (the plan's concurrency)",
            "queue_limit": "Jobs that may wait before submissions are refused",
        }
        for key, text in described.items():
            yield GaugeMetricFamily(f"mineru_fit_api_jobs_{key}" if key in ("queued", "running") else f"mineru_fit_api_{key}",
                                    text, value=float(values.get(key, 0)))
        yield GaugeMetricFamily("mineru_fit_api_pages_per_second", "Pages settled per second over the last minute",
                                value=self.rate.per_second())
