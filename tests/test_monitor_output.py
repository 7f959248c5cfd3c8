"""What the monitor shows and emits: the TUI as text, the JSON schema, Prometheus gauges, the loop."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from mineru_fit.monitor import (
    AdvisorContext,
    MemoryPoint,
    MonitorOptions,
    advise,
    render_monitor,
    run_monitor,
    snapshot_to_dict,
    sparkline,
)
from mineru_fit.monitor.exporter import Exporter, exposition
from fixtures.monitor import FakeClock, metrics_text, record, sampler

METRICS_URL = "http://127.0.0.1:30000/metrics"


def text_of(renderable, width: int = 160) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def engine_moment(nvml: str = "rtx4090_shared_sglang.json", metrics: str = "sglang_kv_high.prom", pid: int = 5120):
    rec = record("sglang", "basic", pid, argv=["python", "-m", "sglang.launch_server", "--mem-fraction-static", "0.3"])
    with sampler(nvml, routes={METRICS_URL: metrics_text(metrics)}, records=[rec]) as s:
        return s.sample()


def test_sparkline_scales_to_the_total() -> None:
    assert sparkline([0, 50, 100], 100) == "▁▅█"
    assert sparkline(range(100), 99, width=4) == "███" + "█" and len(sparkline(range(100), 99)) == 24
    assert sparkline([1, 2], 0) == ""


def test_gpu_process_engine_and_advice_panels_render_as_text() -> None:
    snap = engine_moment()
    history = tuple(MemoryPoint(snap.time_s - 3 + i, used, 0) for i, used in enumerate((0, 8 * 2**30, 16 * 2**30)))
    snap = replace(snap, memory_history=(history + snap.history_of(0),))
    out = text_of(render_monitor(snap, advise(snap)))
    for cell in ("NVIDIA GeForce RTX 4090", "17.7 / 24.0 GiB (74%)", "0.3 GiB", "64 %", "58 °C", "211 / 450 W",
                 "▁▃▆▆", "5120", "sglang::scheduler", "7.5 GiB", "mineru-fit sglang basic", "6001",
                 "sglang basic", "94% of 428,032 tok", "Advice (2)", "raise --mem-fraction-static 0.3 -> 0.5",
                 "NVML memory v2", "driver 550.144.03"):
        assert cell in out, cell


def test_no_gpu_says_so_and_still_shows_engines() -> None:
    with sampler("nvml_missing.json", engine_urls=["http://127.0.0.1:39999"]) as s:
        snap = s.sample()
    out = text_of(render_monitor(snap, advise(snap)))
    assert "no CUDA GPU found: NVML library not found (no NVIDIA driver installed)" in out
    assert "http://127.0.0.1:39999/metrics" in out and "unreachable" in out


def test_old_driver_container_and_quiet_machine() -> None:
    with sampler("old_driver_no_v2.json") as s:
        old = text_of(render_monitor(s.sample()))
    assert "NVML memory v1 (used includes the driver reserve)" in old and "Reserved" not in old
    with sampler("container_no_processes.json") as s:
        container = s.sample()
    out = text_of(render_monitor(container, advise(container)))
    assert "no GPU processes visible to NVML" in out and "9.6 GiB in use but NVML lists no process" in out
    with sampler("rtx4060ti_16gb.json") as s:
        quiet = s.sample()
    assert "nothing to change" in text_of(render_monitor(quiet, advise(quiet)))
    assert "engines: none found" in text_of(render_monitor(quiet))


def test_json_has_the_documented_stable_keys() -> None:
    snap = engine_moment()
    body = json.loads(json.dumps(snapshot_to_dict(snap, advise(snap))))
    assert list(body) == ["schema", "version", "time", "time_s", "backend", "driver_version", "cuda_driver_version",
                          "nvml_memory_v2", "reason", "warnings", "simulated_from", "gpus", "engines", "advice"]
    assert body["schema"] == "mineru-fit/monitor" and body["version"] == 1
    gpu = body["gpus"][0]
    assert list(gpu) == ["index", "nvml_index", "name", "uuid", "memory", "memory_used_ratio", "utilization_pct",
                         "memory_utilization_pct", "temperature_c", "power_w", "power_limit_w", "processes"]
    assert gpu["processes"][0] == {"pid": 5120, "user": None, "name": "sglang::scheduler", "used_bytes": 7.5 * 2**30,
                                   "kind": "compute", "engine": {"engine": "sglang", "level": "basic", "pid": 5120,
                                                                 "base_url": "http://127.0.0.1:30000"}}
    engine = body["engines"][0]
    assert list(engine) == ["metrics_url", "engine", "state", "error", "pid", "level", "model", "max_model_len",
                            "requests_running", "requests_waiting", "kv_cache_usage", "max_total_tokens",
                            "batch_limit", "memory_fraction", "memory", "oom_events", "generation_tokens_total",
                            "requests_completed_total"]
    assert engine["state"] == "ok" and engine["kv_cache_usage"] == 0.94
    assert list(body["advice"][0]) == ["severity", "rule", "message", "action", "command", "gpu_index", "engine_url"]


def test_prometheus_exposition_has_gpu_gauges_and_advice_counts() -> None:
    snap = engine_moment()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(exposition(snap, advise(snap))) for s in family.samples}
    gpu = (("gpu", "0"), ("name", "NVIDIA GeForce RTX 4090"), ("uuid", "GPU-9a1f3c7e-5d2b-4e86-a0c4-6b8e2f1d7a95"))
    assert samples[("mineru_fit_monitor_gpu_memory_free_bytes", gpu)] == 6 * 2**30
    assert samples[("mineru_fit_monitor_gpu_temperature_celsius", gpu)] == 58
    assert samples[("mineru_fit_monitor_gpu_power_watts", gpu)] == 211.4
    assert samples[("mineru_fit_monitor_advice", (("rule", "kv-headroom"),))] == 1
    assert samples[("mineru_fit_monitor_advice", (("rule", "gpu-hot"),))] == 0
    assert samples[("mineru_fit_monitor_advice_by_severity", (("severity", "warn"),))] == 1
    assert samples[("mineru_fit_monitor_engine_up", (("engine", "sglang"), ("url", METRICS_URL)))] == 1


def test_exporter_serves_over_http() -> None:
    snap = engine_moment()
    exporter = Exporter(0)
    try:
        exporter.update(snap, advise(snap))
        body = httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).text
    finally:
        exporter.close()
    assert 'mineru_fit_monitor_gpu_memory_total_bytes{gpu="0"' in body


def test_the_loop_logs_each_refresh_and_stops_after_count(tmp_path) -> None:
    clock = FakeClock()
    log = tmp_path / "monitor.jsonl"
    out = io.StringIO()
    console = Console(file=out, width=140, color_system=None)
    with sampler("l4_nearly_full.json", clock=clock) as s:
        code = run_monitor(s, AdvisorContext(), MonitorOptions(interval_s=31, count=3, log_path=log), console,
                           sleep=clock.advance)
    assert code == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [round(line["time_s"] - lines[0]["time_s"]) for line in lines] == [0, 31, 62]
    # The third refresh has 62 s of a nearly full GPU behind it: the loop passed history to the advisor.
    assert "near-limit" in [a["rule"] for a in lines[2]["advice"]]
    assert "near-limit" not in [a["rule"] for a in lines[1]["advice"]]
    assert out.getvalue().count("mineru-fit monitor ·") == 3 and "every 31 s" in out.getvalue()


def test_once_json_is_one_object() -> None:
    out = io.StringIO()
    with sampler("h100_80gb_1gpu.json") as s:
        run_monitor(s, AdvisorContext(), MonitorOptions(once=True, as_json=True), Console(file=out))
    assert json.loads(out.getvalue())["gpus"][0]["memory"]["used_bytes"] == 5509218304

