"""`monitor watch` at the edge: run the command, tee its output, sample its GPU memory, find phase ends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Optional, Sequence, Union

import httpx

from mineru_fit.errors import UsageError
from mineru_fit.monitor import procs
from mineru_fit.monitor.engines import parse_metrics
from mineru_fit.monitor.probe import ProcessMemoryProbe
from mineru_fit.monitor.watch import DEFAULT_READY_PATTERN, PhaseMarks, WatchSample, infer_base_url, watch_result

# How often the process tree is re-read from /proc (engines fork workers while loading).
TREE_REFRESH_S = 0.5
HEALTH_POLL_S = 0.25
METRICS_POLL_S = 0.5
HTTP_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class WatchOptions:
    """What `monitor watch` was asked."""

    command: Sequence[str]
    interval_ms: float = 50.0
    out: Optional[Path] = None
    health_url: Optional[str] = None
    metrics_url: Optional[str] = None
    ready_pattern: Optional[str] = DEFAULT_READY_PATTERN
    phase_marker: Optional[str] = None
    simulate: Optional[Union[str, Path]] = None


@dataclass
class _Events:
    """Phase ends seen by the reader and poller threads (seconds since start); first one wins."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    load_end_s: Optional[float] = None
    load_ended_by: Optional[str] = None
    first_request_end_s: Optional[float] = None
    first_request_ended_by: Optional[str] = None

    def load_ended(self, at_s: float, by: str) -> None:
        with self.lock:
            if self.load_end_s is None:
                self.load_end_s, self.load_ended_by = at_s, by

    def first_request_done(self, at_s: float, by: str) -> None:
        with self.lock:
            if self.load_end_s is not None and self.first_request_end_s is None:
                self.first_request_end_s, self.first_request_ended_by = at_s, by

    def marks(self, end_s: float) -> PhaseMarks:
        with self.lock:
            return PhaseMarks(end_s=end_s, load_end_s=self.load_end_s, load_ended_by=self.load_ended_by,
                              first_request_end_s=self.first_request_end_s,
                              first_request_ended_by=self.first_request_ended_by)


def run_watch(options: WatchOptions) -> tuple[int, dict[str, Any]]:
    """Run the command to its end; return its exit code and the JSON result (also written to --out)."""
    command = list(options.command)
    if not command:
        raise UsageError("monitor watch needs a command — e.g. mineru-fit monitor watch -- mineru-fit serve ...")
    if not 1 <= options.interval_ms <= 1000:
        raise UsageError(f"--interval-ms {options.interval_ms:g} is outside 1..1000 — 50 means 20 samples a second")
    if options.out is not None and not Path(options.out).parent.is_dir():
        # Found out before the run, not after an hour of it.
        raise UsageError(f"--out {options.out}: its folder does not exist — create it or pick another path")
    ready = _compile(options.ready_pattern, "--ready-pattern")
    marker = _compile(options.phase_marker, "--phase-marker")
    base = infer_base_url(command)
    health_url = options.health_url or (f"{base}/health" if base else None)
    metrics_url = options.metrics_url or (f"{base}/metrics" if base else None)
    probe, reason = ProcessMemoryProbe.open(options.simulate)
    started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    start = time.monotonic()
    try:
        # Unbuffered: a Python child's ready line must arrive when printed, not at exit.
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 errors="replace", bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except OSError as exc:
        if probe is not None:
            probe.close()
        raise UsageError(f"cannot run {command[0]!r}: {exc.strerror or exc} — check the command after --") from exc
    events = _Events()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_tee, args=(child.stdout, sys.stdout, events, ready, marker, start), daemon=True),
        threading.Thread(target=_tee, args=(child.stderr, sys.stderr, events, ready, marker, start), daemon=True),
    ]
    if health_url or metrics_url:
        threads.append(threading.Thread(target=_poll, args=(health_url, metrics_url, events, start, stop), daemon=True))
    for thread in threads:
        thread.start()
    samples: list[WatchSample] = []
    pids: set[int] = set()
    try:
        _sample_until_exit(child, probe, options.interval_ms / 1000.0, start, samples, pids)
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the child too; a `kill -INT` of ours alone does not: pass it on.
        _stop_child(child)
    finally:
        stop.set()
        if probe is not None:
            probe.close()
    end_s = time.monotonic() - start
    for thread in threads:
        thread.join(timeout=2.0)
    exit_code = _exit_code(child.returncode)
    notes = [] if probe is not None else ["the command ran without GPU sampling"]
    result = watch_result(command=command, exit_code=exit_code, started_at=started_at, samples=samples,
                          marks=events.marks(end_s), interval_ms=options.interval_ms, reason=reason, notes=notes,
                          pids=sorted(pids))
    if options.out is not None:
        try:
            Path(options.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--out {options.out}: cannot write it ({exc.strerror or exc})") from exc
    return exit_code, result


def _sample_until_exit(child: subprocess.Popen, probe: Optional[ProcessMemoryProbe], interval_s: float,
                       start: float, samples: list[WatchSample], pids: set[int]) -> None:
    tree: set[int] = {child.pid}
    tree_read_at = -1.0
    next_tick = time.monotonic()
    while True:
        running = child.poll() is None
        if probe is not None:
            now = time.monotonic()
            reading = probe.read()
            unknown = any(pid not in tree for pid in reading.per_pid_bytes)
            if now - tree_read_at >= TREE_REFRESH_S or (unknown and now - tree_read_at >= interval_s):
                if running:
                    # Sticky: a worker reparented to init when its launcher exits still counts.
                    tree |= procs.descendants(child.pid, procs.all_parents())
                tree_read_at = now
            mine = {pid: used for pid, used in reading.per_pid_bytes.items() if pid in tree}
            pids.update(mine)
            samples.append(WatchSample(time_s=now - start, process_bytes=sum(mine.values()) if mine else None,
                                       device_used_bytes=reading.device_used_bytes))
        if not running:
            return
        next_tick += interval_s
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_tick = time.monotonic()  # fell behind (a slow NVML call): do not burst to catch up


def _tee(stream: Optional[IO[str]], sink: IO[str], events: _Events, ready: Optional[re.Pattern[str]],
         marker: Optional[re.Pattern[str]], start: float) -> None:
    if stream is None:
        return
    for line in stream:
        sink.write(line)
        sink.flush()
        at_s = time.monotonic() - start
        if ready is not None and ready.search(line):
            events.load_ended(at_s, "ready_pattern")
        if marker is not None and marker.search(line):
            events.first_request_done(at_s, "phase_marker")
    stream.close()


def _poll(health_url: Optional[str], metrics_url: Optional[str], events: _Events, start: float,
          stop: threading.Event) -> None:
    baseline: Optional[float] = None
    with httpx.Client(timeout=HTTP_TIMEOUT_S, trust_env=False) as client:
        while not stop.is_set():
            if events.load_end_s is None:
                if health_url and _answers(client, health_url):
                    events.load_ended(time.monotonic() - start, "health")
                stop.wait(HEALTH_POLL_S)
                continue
            if events.first_request_end_s is not None or not metrics_url:
                return
            done = _completed(client, metrics_url)
            if done is not None:
                if baseline is None:
                    baseline = done
                elif done > baseline:
                    events.first_request_done(time.monotonic() - start, "metrics")
            stop.wait(METRICS_POLL_S)


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _completed(client: httpx.Client, url: str) -> Optional[float]:
    """Finished requests (or generated tokens, when the engine has no request counter) so far."""
    try:
        response = client.get(url)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    state = parse_metrics(response.text, url)
    return state.requests_completed if state.requests_completed is not None else state.generation_tokens


def _stop_child(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=10)  # the time a server needs to stop cleanly
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _exit_code(returncode: Optional[int]) -> int:
    if returncode is None:
        return 1
    # A child killed by signal N exits as a shell would report it: 128 + N.
    return 128 - returncode if returncode < 0 else returncode


def _compile(pattern: Optional[str], flag: str) -> Optional[re.Pattern[str]]:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{flag} {pattern!r} is not a valid regular expression ({exc}) — quote it in the shell") from exc
