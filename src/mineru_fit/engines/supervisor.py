"""Run SGLang or vLLM under a plan: start it, wait for /health, read the memory it reports,
and when memory runs out (or the weights do not load) step down one level and try again.

The engine runs in its own process group. SIGINT/SIGTERM are forwarded to that group, and
on every way out — a stop, a failure, an exception — the whole group is terminated, so no
engine worker outlives the supervisor. While the engine is up a run record says where it is.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from types import FrameType, ModuleType
from typing import Callable, Optional, Sequence, Union

from mineru_fit.engines.command import EngineCommand
from mineru_fit.engines.launch import engine_module
from mineru_fit.engines.process import EngineProcess, healthy
from mineru_fit.engines.startlog import Failure, StartupMemory, classify_failure, parse_startup
from mineru_fit.engines.startup_record import (
    AttemptReport, comparison_lines, logs_dir, record_body, save_record, utc_stamp,
)
from mineru_fit.errors import EngineError
from mineru_fit.planner.plan import Plan
from mineru_fit.runrecords import RunRecord, remove_record, write_record
from mineru_fit.units import human

_STOPPED = "stopped"
_HEALTHY = "healthy"


@dataclass(frozen=True)
class LevelRun:
    """One level the supervisor may try: its plan and the command fitted to this machine."""

    plan: Plan
    command: EngineCommand


@dataclass(frozen=True)
class SupervisorOptions:
    health_timeout_s: float = 900.0   # first starts download weights and compile kernels
    poll_interval_s: float = 0.25
    stop_grace_s: float = 15.0
    ready_wait_s: float = 2.0         # for the log reader to catch up with the ready line


class Supervisor:
    """Try each LevelRun in order until one serves; then serve until stopped."""

    def __init__(self, runs: Sequence[LevelRun], report: Callable[[str], None],
                 options: SupervisorOptions = SupervisorOptions()) -> None:
        if not runs:
            raise ValueError("nothing to start")
        self.runs = list(runs)
        self.report = report
        self.options = options
        self.attempts: list[AttemptReport] = []
        self.startup_record_path: Optional[str] = None
        self._stop_signal: Optional[int] = None
        self._current: Optional[EngineProcess] = None
        self._record: Optional[RunRecord] = None

    # --- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Optional[FrameType]) -> None:
        self._stop_signal = signum
        current = self._current
        if current is not None:
            current.signal_group(signum)

    def _install_signals(self) -> dict[int, object]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Ask a supervisor running in another thread to stop its engine and return (as SIGTERM would)."""
        self._on_signal(signal.SIGTERM, None)

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        """Blocks until the engine stops. 0 after a requested stop; EngineError when nothing served."""
        previous = self._install_signals()
        try:
            return self._run()
        finally:
            self._cleanup()
            self._restore_signals(previous)

    def _cleanup(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.stop(self.options.stop_grace_s)
        self._drop_record()

    def _drop_record(self) -> None:
        if self._record is not None:
            remove_record(self._record)
            self._record = None

    def _run(self) -> int:
        total = len(self.runs)
        for number, run in enumerate(self.runs, start=1):
            if self._stop_signal is not None:
                return 0
            failure = self._attempt(number, total, run)
            if failure is None:
                return 0
            self.report(f"attempt {number}/{total} failed: {_describe(failure)}")
            if not failure.memory:
                raise EngineError(f"{run.plan.engine} failed at level {run.plan.level}: {failure.line} — not a memory "
                                  f"problem, so a lighter level would not help; see {self.attempts[-1].log_path}")
            if number < total:
                self.report(f"stepping down: {run.plan.level} → {self.runs[number].plan.level}")
        last = self.runs[-1].plan
        levels = ", ".join(r.plan.level for r in self.runs)
        raise EngineError(f"{last.engine} ran out of memory at every level tried ({levels}) — free GPU memory, "
                          f"lower --concurrency or --max-model-len; last log: {self.attempts[-1].log_path}")

    def _attempt(self, number: int, total: int, run: LevelRun) -> Optional[Failure]:
        """None when the engine served and was stopped on request; else why it ended."""
        plan, command = run.plan, run.command
        module = engine_module(plan.engine)
        log_path = logs_dir() / f"{plan.engine}-{utc_stamp()}-{plan.level}.log"
        self.report(f"attempt {number}/{total}: {plan.engine} at level {plan.level} "
                    f"(predicted peak {human(plan.predicted_peak_bytes)}); log: {log_path}")
        try:
            self._current = EngineProcess(command.argv, command.env, log_path)
        except OSError as exc:
            raise EngineError(f"cannot start {plan.engine} ({command.argv[0]}): {exc} — install it or set "
                              f"{module.EXECUTABLE_VARIABLE}") from exc
        proc = self._current
        outcome = self._wait_healthy(proc, command)
        memory = parse_startup(proc.lines(), module.STARTUP_PATTERNS, module.READY_MARKERS)
        if outcome == _STOPPED:
            self._note(number, plan, _STOPPED, "stopped before it was up", log_path, memory)
            return None
        if isinstance(outcome, Failure):
            self._note(number, plan, outcome.kind, outcome.line, log_path, memory)
            self._finish(proc)
            return outcome
        memory = self._settle(proc, module)
        self._note(number, plan, _HEALTHY, f"up at {command.base_url}", log_path, memory)
        self._announce(run, proc, memory, log_path)
        after = self._serve(proc, module)
        self._drop_record()
        if after is None:
            return None
        self.attempts[-1] = replace(self.attempts[-1], outcome=after.kind, detail=f"after start: {after.line}")
        self._finish(proc)
        return replace(after, line=f"after start: {after.line}")

    def _finish(self, proc: EngineProcess) -> None:
        proc.stop(self.options.stop_grace_s)
        self._current = None

    def _note(self, number: int, plan: Plan, outcome: str, detail: str, log_path: os.PathLike[str],
              memory: StartupMemory) -> None:
        self.attempts.append(AttemptReport(number, plan.level, outcome, detail, str(log_path), memory))

    def _wait_healthy(self, proc: EngineProcess, command: EngineCommand) -> Union[str, Failure]:
        module = engine_module(command.engine)
        deadline = time.monotonic() + self.options.health_timeout_s
        while True:
            if self._stop_signal is not None:
                return _STOPPED
            code = proc.poll()
            if code is not None:
                # Its workers may live on holding the log pipe open: end the group, then read.
                proc.stop(self.options.stop_grace_s)
                return self._failure(proc, module, code)
            if healthy(command.health_url, timeout_s=min(2.0, self.options.health_timeout_s)):
                return _HEALTHY
            if time.monotonic() > deadline:
                return Failure("timeout", f"no answer from {command.health_url} within "
                                          f"{self.options.health_timeout_s:g} s")
            time.sleep(self.options.poll_interval_s)

    def _failure(self, proc: EngineProcess, module: ModuleType, code: Optional[int]) -> Failure:
        lines = proc.lines()
        memory = parse_startup(lines, module.STARTUP_PATTERNS)
        return classify_failure(lines, module.FAILURE_PATTERNS, weights_loaded=memory.weights_loaded,
                                returncode=code)

    def _settle(self, proc: EngineProcess, module: ModuleType) -> StartupMemory:
        deadline = time.monotonic() + self.options.ready_wait_s
        memory = parse_startup(proc.lines(), module.STARTUP_PATTERNS, module.READY_MARKERS)
        while not memory.ready and time.monotonic() < deadline:
            time.sleep(0.05)
            memory = parse_startup(proc.lines(), module.STARTUP_PATTERNS, module.READY_MARKERS)
        return memory

    def _announce(self, run: LevelRun, proc: EngineProcess, memory: StartupMemory, log_path: os.PathLike[str]) -> None:
        plan, command = run.plan, run.command
        self._record = RunRecord(
            engine=plan.engine, level=plan.level, pid=proc.pid, base_url=command.base_url,
            metrics_url=command.metrics_url, started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            argv=list(command.argv), plan=plan.model_dump(mode="json"), supervisor_pid=os.getpid(),
        )
        write_record(self._record)
        body = record_body(plan, command, memory, self.attempts, log_path)
        self.startup_record_path = str(save_record(body))
        self.report(f"{plan.engine} is up at {command.base_url} (level {plan.level}, pid {proc.pid}); "
                    "memory it reported at startup, per GPU:")
        for line in comparison_lines(plan, memory):
            self.report(line)
        self.report(f"startup record: {self.startup_record_path}")

    def _serve(self, proc: EngineProcess, module: ModuleType) -> Optional[Failure]:
        """Until the engine exits (why, returned) or a stop is asked for (None)."""
        while True:
            if self._stop_signal is not None:
                self.report(f"stopping {proc.pid} ({signal.Signals(self._stop_signal).name} forwarded)")
                return None
            code = proc.poll()
            if code is not None:
                proc.stop(self.options.stop_grace_s)
                failure = self._failure(proc, module, code)
                return failure if failure.kind != "load" else Failure("crash", failure.line)
            time.sleep(self.options.poll_interval_s)


def _describe(failure: Failure) -> str:
    what = {
        "oom": "out of GPU memory",
        "kv_cache": "no room for the KV cache",
        "gpu_busy": "less GPU memory free than the engine asks for",
        "load": "the model did not load",
        "crash": "the engine stopped",
        "timeout": "no health answer in time",
        "port_in_use": "the port is taken",
        "usage": "the engine refused its arguments",
    }.get(failure.kind, failure.kind)
    return f"{what} ({failure.line})"
