"""`--prometheus PORT`: the latest snapshot as Prometheus gauges (GPUs, engines, advice counts).

Names start with mineru_fit_monitor_ so they never collide with the built-in server's own
mineru_fit_* series when one Prometheus scrapes both.
"""

from __future__ import annotations

import threading
from typing import Iterator, Optional, Sequence

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mineru_fit.errors import UsageError
from mineru_fit.monitor.advice import SEVERITIES, Advice
from mineru_fit.monitor.advisor import RULES
from mineru_fit.monitor.snapshot import Snapshot

PREFIX = "mineru_fit_monitor_"


class MonitorCollector(Collector):
    """Serves whatever snapshot was handed to it last; the sampling loop calls `update`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Optional[Snapshot] = None
        self._advice: tuple[Advice, ...] = ()

    def update(self, snapshot: Snapshot, advice: Sequence[Advice]) -> None:
        with self._lock:
            self._snapshot, self._advice = snapshot, tuple(advice)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshot, advice = self._snapshot, self._advice
        if snapshot is None:
            return
        yield from _gpu_families(snapshot)
        up = GaugeMetricFamily(PREFIX + "engine_up", "1 when the engine's /metrics answered", labels=["engine", "url"])
        for e in snapshot.engines:
            up.add_metric([e.name, e.metrics_url], 1.0 if e.reachable else 0.0)
        yield up
        by_rule = GaugeMetricFamily(PREFIX + "advice", "Advice given now, per rule", labels=["rule"])
        for rule in RULES:
            by_rule.add_metric([rule], float(sum(1 for a in advice if a.rule == rule)))
        yield by_rule
        by_severity = GaugeMetricFamily(PREFIX + "advice_by_severity", "Advice given now, per severity", labels=["severity"])
        for severity in SEVERITIES:
            by_severity.add_metric([severity], float(sum(1 for a in advice if a.severity == severity)))
        yield by_severity
        yield GaugeMetricFamily(PREFIX + "snapshot_timestamp_seconds", "When the snapshot was taken", value=snapshot.time_s)


def _gpu_families(snapshot: Snapshot) -> Iterator[GaugeMetricFamily]:
    labels = ["gpu", "name", "uuid"]
    specs = (
        ("gpu_memory_used_bytes", "Device memory in use (NVML)", lambda g: g.memory.used_bytes),
        ("gpu_memory_free_bytes", "Device memory free (NVML)", lambda g: g.memory.free_bytes),
        ("gpu_memory_total_bytes", "Device memory in total", lambda g: g.memory.total_bytes),
        ("gpu_memory_reserved_bytes", "Driver-reserved memory (NVML v2; 0 on v1)", lambda g: g.memory.reserved_bytes),
        ("gpu_utilization_percent", "GPU utilisation over the last sample period", lambda g: g.utilization_pct),
        ("gpu_temperature_celsius", "GPU core temperature", lambda g: g.temperature_c),
        ("gpu_power_watts", "Power draw", lambda g: g.power_w),
        ("gpu_power_limit_watts", "Enforced power limit", lambda g: g.power_limit_w),
    )
    for name, help_text, value_of in specs:
        family = GaugeMetricFamily(PREFIX + name, help_text, labels=labels)
        for gpu in snapshot.gpus:
            value = value_of(gpu)
            if value is not None:  # a value NVML will not give is absent, not 0
                family.add_metric([str(gpu.index), gpu.name, gpu.uuid], float(value))
        yield family


def make_registry() -> tuple[CollectorRegistry, MonitorCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = MonitorCollector()
    registry.register(collector)
    return registry, collector


def exposition(snapshot: Snapshot, advice: Sequence[Advice] = ()) -> str:
    """The text a scrape would return for this snapshot."""
    registry, collector = make_registry()
    collector.update(snapshot, advice)
    return generate_latest(registry).decode("utf-8")


class Exporter:
    """A running exporter: an HTTP server thread over one collector."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.registry, self.collector = make_registry()
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise UsageError(f"--prometheus {port}: cannot listen on {host}:{port} ({exc.strerror or exc}) — pick another port") from exc

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def update(self, snapshot: Snapshot, advice: Sequence[Advice]) -> None:
        self.collector.update(snapshot, advice)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
