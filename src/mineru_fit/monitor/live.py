"""The monitor loop: sample, advise, then show (rich Live or frames), log (JSONL), export (Prometheus)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterator, Optional

from rich.console import Console
from rich.live import Live

from mineru_fit.errors import UsageError
from mineru_fit.monitor.advice import Advice, AdvisorContext
from mineru_fit.monitor.advisor import advise
from mineru_fit.monitor.render import render_monitor
from mineru_fit.monitor.sampling import Sampler
from mineru_fit.monitor.schema import snapshot_to_dict
from mineru_fit.monitor.snapshot import Snapshot

if TYPE_CHECKING:
    from mineru_fit.monitor.exporter import Exporter


@dataclass(frozen=True)
class MonitorOptions:
    """How the monitor runs and where it reports."""

    interval_s: float = 1.0
    once: bool = False
    as_json: bool = False
    count: Optional[int] = None  # stop after this many refreshes (None: until Ctrl-C)
    log_path: Optional[Path] = None
    prometheus_port: Optional[int] = None
    prometheus_host: str = "127.0.0.1"


def run_monitor(sampler: Sampler, ctx: AdvisorContext, options: MonitorOptions, console: Console,
                sleep: Callable[[float], None] = time.sleep) -> int:
    """Run until `count` refreshes, once, or Ctrl-C; returns the exit code (0)."""
    if options.interval_s <= 0:
        raise UsageError(f"--interval {options.interval_s:g} must be above 0 seconds — e.g. --interval 1")
    exporter: Optional[Exporter] = None
    if options.prometheus_port is not None:
        from mineru_fit.monitor.exporter import Exporter

        exporter = Exporter(options.prometheus_port, options.prometheus_host)
    log = _open_log(options.log_path)
    try:
        if options.once:
            snapshot, advice = _step(sampler, ctx, log, exporter)
            _show_once(snapshot, advice, options, console)
            return 0
        frames = _frames(sampler, ctx, options, log, exporter, sleep)
        if options.as_json:
            for snapshot, advice in frames:  # JSON lines, one snapshot each
                console.file.write(json.dumps(snapshot_to_dict(snapshot, advice)) + "\n")
                console.file.flush()
        elif console.is_terminal:
            with Live(console=console, auto_refresh=False, screen=False) as live:
                for snapshot, advice in frames:
                    live.update(render_monitor(snapshot, advice, footer=_footer(options, exporter)), refresh=True)
        else:  # a pipe or a file: one frame after another, nothing redrawn
            for snapshot, advice in frames:
                console.print(render_monitor(snapshot, advice, footer=_footer(options, exporter)))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live monitor ends
    finally:
        if log is not None:
            log.close()
        if exporter is not None:
            exporter.close()
    return 0


def _frames(sampler: Sampler, ctx: AdvisorContext, options: MonitorOptions, log: Optional[IO[str]],
            exporter: Optional[Exporter], sleep: Callable[[float], None]) -> Iterator[tuple[Snapshot, list[Advice]]]:
    done = 0
    while options.count is None or done < options.count:
        started = time.monotonic()
        yield _step(sampler, ctx, log, exporter)
        done += 1
        if options.count is not None and done >= options.count:
            return
        sleep(max(0.0, options.interval_s - (time.monotonic() - started)))


def _step(sampler: Sampler, ctx: AdvisorContext, log: Optional[IO[str]], exporter: Optional[Exporter]) -> tuple[Snapshot, list[Advice]]:
    snapshot = sampler.sample()
    advice = advise(snapshot, sampler.history_before(snapshot), ctx)
    if log is not None:
        log.write(json.dumps(snapshot_to_dict(snapshot, advice)) + "\n")
        log.flush()
    if exporter is not None:
        exporter.update(snapshot, advice)
    return snapshot, advice


def _show_once(snapshot: Snapshot, advice: list[Advice], options: MonitorOptions, console: Console) -> None:
    if options.as_json:
        # Plain print: rich would wrap long lines and colour the JSON.
        console.file.write(json.dumps(snapshot_to_dict(snapshot, advice), indent=2) + "\n")
    else:
        console.print(render_monitor(snapshot, advice))


def _footer(options: MonitorOptions, exporter: Optional[Exporter]) -> str:
    bits = [f"every {options.interval_s:g} s", "Ctrl-C to stop"]
    if exporter is not None:
        bits.append(f"Prometheus on :{exporter.port}/metrics")
    if options.log_path is not None:
        bits.append(f"logging to {options.log_path}")
    return " · ".join(bits)


def _open_log(path: Optional[Path]) -> Optional[IO[str]]:
    if path is None:
        return None
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--log {path}: cannot open it for writing ({exc.strerror or exc})") from exc
