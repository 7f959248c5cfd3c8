"""`monitor watch`: peaks per phase from sample series (pure), and real child processes on this machine."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from mineru_fit.errors import UsageError
from mineru_fit.monitor.watch import PhaseMarks, WatchSample, infer_base_url, phase_peaks, watch_result
from mineru_fit.monitor.watch_run import WatchOptions, run_watch
from fixtures.monitor import NVML

GIB = 2**30


def series(points: list[tuple[float, float | None]], device_gib: float = 1.0) -> list[WatchSample]:
    """Samples every 50 ms holding each (until_s, process GiB) value until its time."""
    samples, t = [], 0.0
    for until_s, value in points:
        while t < until_s - 1e-9:
            process = None if value is None else int(value * GIB)
            samples.append(WatchSample(round(t, 3), process, int((device_gib + (value or 0)) * GIB)))
            t += 0.05
    return samples


def test_oom_after_warm_up_shows_as_a_steady_peak_above_the_load_peak() -> None:
    samples = series([(1.0, 1.5), (2.0, 2.5), (3.0, 3.0), (4.0, 3.4), (5.0, 2.9)])
    marks = PhaseMarks(end_s=5.0, load_end_s=2.0, load_ended_by="health", first_request_end_s=3.0,
                       first_request_ended_by="metrics")
    source, peaks = phase_peaks(samples, marks)
    assert source == "process"
    assert (peaks["load"].peak_bytes, peaks["load"].ended_by) == (int(2.5 * GIB), "health")
    assert (peaks["first_request"].peak_bytes, peaks["first_request"].start_s) == (3 * GIB, 2.0)
    assert (peaks["steady"].peak_bytes, peaks["steady"].peak_at_s) == (int(3.4 * GIB), 3.0)
    assert sum(p.samples for p in peaks.values()) == len(samples) == 100  # 20 Hz for 5 s, each sample in one phase
    result = watch_result(command=["x"], exit_code=0, started_at="t", samples=samples, marks=marks,
                          interval_ms=50, reason=None)
    assert (result["peak_phase"], result["peak_bytes"], result["sample_rate_hz"]) == ("steady", int(3.4 * GIB), 20.0)


def test_empty_process_list_falls_back_to_the_device_delta_and_says_so() -> None:
    samples = series([(1.0, None), (2.0, None)], device_gib=3.0)
    samples = [WatchSample(s.time_s, None, s.device_used_bytes + (GIB if s.time_s >= 1.0 else 0)) for s in samples]
    result = watch_result(command=["x"], exit_code=0, started_at="t", samples=samples,
                          marks=PhaseMarks(end_s=2.0), interval_ms=50, reason=None)
    assert result["memory_source"] == "device_delta" and result["peak_bytes"] == GIB
    assert any("NVML listed none of the command's processes" in n for n in result["notes"])
    assert any("the whole run counts as load" in n for n in result["notes"])
    assert result["phases"]["first_request"] is None and result["phases"]["steady"] is None


def test_a_sample_on_a_boundary_belongs_to_the_later_phase() -> None:
    samples = [WatchSample(0.0, 1, 0), WatchSample(1.0, 5, 0), WatchSample(2.0, 2, 0)]
    _, peaks = phase_peaks(samples, PhaseMarks(end_s=2.0, load_end_s=1.0, load_ended_by="ready_pattern"))
    assert (peaks["load"].peak_bytes, peaks["first_request"].peak_bytes) == (1, 5)
    assert peaks["first_request"].samples == 2 and peaks["steady"] is None


@pytest.mark.parametrize("argv, base", [
    (["mineru-fit", "serve", "--port", "30001"], "http://127.0.0.1:30001"),
    (["vllm", "serve", "m", "--port=8000"], "http://127.0.0.1:8000"),
    (["python", "script.py"], None),
])
def test_base_url_comes_from_the_commands_port(argv: list[str], base: str | None) -> None:
    assert infer_base_url(argv) == base


def test_a_command_runs_without_a_gpu_and_its_exit_code_comes_back(tmp_path: Path, capfd) -> None:
    out = tmp_path / "watch.json"
    code, result = run_watch(WatchOptions(
        command=[sys.executable, "-c", "import sys; print('loading'); print('Application startup complete.'); "
                                       "print('page 1 done'); sys.exit(3)"],
        out=out, phase_marker=r"page \d+ done", simulate=NVML / "nvml_missing.json",
    ))
    assert code == 3 and result["exit_code"] == 3
    assert result["reason"] == "no GPU to sample: NVML library not found (no NVIDIA driver installed)"
    assert result["samples"] == 0 and result["peak_bytes"] is None
    assert result["phases"]["load"]["ended_by"] == "ready_pattern"
    assert result["phases"]["first_request"]["ended_by"] == "phase_marker"
    assert "page 1 done" in capfd.readouterr().out  # the child's output still reaches the user
    assert out.read_text().startswith('{\n  "schema": "mineru-fit/watch"')


def test_simulated_gpu_is_sampled_at_20_hz_with_the_device_fallback() -> None:
    code, result = run_watch(WatchOptions(command=[sys.executable, "-c", "import time; time.sleep(0.6)"],
                                          simulate=NVML / "h100_80gb_1gpu.json"))
    assert code == 0 and result["reason"] is None
    assert result["memory_source"] == "device_delta" and result["peak_bytes"] == 0  # the snapshot never changes
    assert result["samples"] >= 8 and result["sample_rate_hz"] >= 15


def test_a_child_killed_by_a_signal_exits_like_a_shell_reports_it() -> None:
    code, _ = run_watch(WatchOptions(command=[sys.executable, "-c", "import os; os.kill(os.getpid(), 15)"],
                                     simulate=NVML / "nvml_missing.json"))
    assert code == 143


SERVER = textwrap.dedent("""
    import http.server, sys, threading, time
    port = int(sys.argv[sys.argv.index("--port") + 1])
    healthy_at = []
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            # The first request "finishes" 0.5 s after the watcher first saw the engine healthy,
            # so the phases' order does not hang on how fast a busy machine starts Python.
            if self.path == "/health" and not healthy_at:
                healthy_at.append(time.monotonic())
            done = 1 if healthy_at and time.monotonic() - healthy_at[0] > 0.5 else 0
            body = {"/health": "ok", "/metrics": "# TYPE vllm:request_success_total counter\\n"
                    f'vllm:request_success_total{{finished_reason="stop"}} {done}\\n'}.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write((body or "").encode())
        def log_message(self, *a):
            pass
    time.sleep(0.3)  # "loading the model"
    server = http.server.HTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(2.5)
""")


def test_health_ends_load_and_the_request_counter_ends_the_first_request() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, result = run_watch(WatchOptions(command=[sys.executable, "-c", SERVER, "--port", str(port)],
                                          simulate=NVML / "nvml_missing.json", ready_pattern=None))
    phases = result["phases"]
    assert code == 0
    assert phases["load"]["ended_by"] == "health" and phases["load"]["end_s"] > 0.25  # not before it served
    assert phases["first_request"]["ended_by"] == "metrics"
    assert phases["first_request"]["end_s"] >= phases["load"]["end_s"] + 0.4  # 0.5 s less the reply's trip
    assert phases["steady"]["ended_by"] == "exit" and phases["steady"]["end_s"] == result["duration_s"]


def test_usage_errors() -> None:
    with pytest.raises(UsageError, match="needs a command"):
        run_watch(WatchOptions(command=[]))
    with pytest.raises(UsageError, match="outside 1..1000"):
        run_watch(WatchOptions(command=["true"], interval_ms=0))
    with pytest.raises(UsageError, match="not a valid regular expression"):
        run_watch(WatchOptions(command=["true"], phase_marker="("))
    with pytest.raises(UsageError, match="its folder does not exist"):
        run_watch(WatchOptions(command=["true"], out=Path("/nonexistent-dir/peaks.json")))
    with pytest.raises(UsageError, match="cannot run 'no-such-program-xyz'"):
        run_watch(WatchOptions(command=["no-such-program-xyz"], simulate=NVML / "nvml_missing.json"))
