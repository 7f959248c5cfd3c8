"""The monitor's screen: a pure function of a Snapshot (and its advice) to a rich renderable."""

from __future__ import annotations

from datetime import datetime
from typing import Optional, Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mineru_fit.devices.types import Gpu
from mineru_fit.monitor.advice import Advice
from mineru_fit.monitor.snapshot import EngineState, MemoryPoint, Snapshot
from mineru_fit.units import gib, human

BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 24
_SEVERITY_STYLE = {"critical": "bold red", "warn": "yellow", "info": "cyan"}


def sparkline(values: Sequence[float], top: float, width: int = SPARK_WIDTH) -> str:
    """The last `width` values as block characters, 0 -> ▁ and `top` -> █."""
    if top <= 0:
        return ""
    shown = list(values)[-width:]
    last = len(BLOCKS) - 1
    return "".join(BLOCKS[max(0, min(last, round(v / top * last)))] for v in shown)


def render_monitor(snapshot: Snapshot, advice: Sequence[Advice] = (), *, footer: Optional[str] = None) -> RenderableType:
    """Header, GPUs, processes, engines and advice for one snapshot."""
    parts: list[RenderableType] = [_header(snapshot)]
    if snapshot.gpus:
        parts.append(_gpu_table(snapshot))
        parts.append(_process_table(snapshot))
    else:
        parts.append(Panel(
            Text(f"no CUDA GPU found: {snapshot.inventory.reason or 'unknown reason'} — nothing to sample on a GPU; "
                 "engines and advice below still update", style="yellow"),
            title="GPUs", title_align="left",
        ))
    for warning in snapshot.inventory.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    parts.append(_engine_table(snapshot.engines))
    parts.append(_advice_panel(advice))
    if footer:
        parts.append(Text(footer, style="dim"))
    return Group(*parts)


def _header(snapshot: Snapshot) -> Text:
    inv = snapshot.inventory
    bits = [f"mineru-fit monitor · {datetime.fromtimestamp(snapshot.time_s).strftime('%Y-%m-%d %H:%M:%S')}",
            f"backend {inv.backend}"]
    if inv.driver_version:
        bits.append(f"driver {inv.driver_version}")
    if inv.cuda_driver_version:
        bits.append(f"CUDA {inv.cuda_driver_version}")
    if inv.backend in ("nvml", "fake") and inv.gpus:
        bits.append("NVML memory v2" if inv.nvml_memory_v2 else "NVML memory v1 (used includes the driver reserve)")
    if snapshot.simulated_from:
        bits.append(f"simulated from {snapshot.simulated_from}")
    return Text(" · ".join(bits), style="bold")


def _gpu_table(snapshot: Snapshot) -> Table:
    show_reserved = any(g.memory.reserved_bytes for g in snapshot.gpus)
    table = Table(title="GPUs", title_justify="left", header_style="bold")
    for name, justify in (("GPU", "right"), ("Name", "left"), ("Memory used / total", "right")):
        table.add_column(name, justify=justify)
    if show_reserved:
        table.add_column("Reserved", justify="right")
    for name in ("Util", "Temp", "Power"):
        table.add_column(name, justify="right")
    table.add_column("Memory history", no_wrap=True)
    for position, gpu in enumerate(snapshot.gpus):
        row = [str(gpu.index), gpu.name, _memory_cell(gpu)]
        if show_reserved:
            row.append(gib(gpu.memory.reserved_bytes))
        row += [
            "-" if gpu.utilization_pct is None else f"{gpu.utilization_pct} %",
            _temperature_cell(gpu.temperature_c),
            _power_cell(gpu),
            _history_cell(snapshot.history_of(position), gpu.memory.total_bytes),
        ]
        table.add_row(*row)
    return table


def _memory_cell(gpu: Gpu) -> Text:
    m = gpu.memory
    ratio = m.used_bytes / m.total_bytes if m.total_bytes else 0.0
    style = "bold red" if ratio >= 0.97 else "yellow" if ratio >= 0.90 else ""
    return Text(f"{m.used_bytes / 2**30:.1f} / {gib(m.total_bytes)} ({ratio:.0%})", style=style)


def _temperature_cell(temperature_c: Optional[int]) -> Text:
    if temperature_c is None:
        return Text("-")
    style = "bold red" if temperature_c >= 85 else "yellow" if temperature_c >= 75 else ""
    return Text(f"{temperature_c} °C", style=style)


def _power_cell(gpu: Gpu) -> str:
    if gpu.power_w is None and gpu.power_limit_w is None:
        return "-"
    now = "-" if gpu.power_w is None else f"{gpu.power_w:.0f}"
    cap = "-" if gpu.power_limit_w is None else f"{gpu.power_limit_w:.0f}"
    return f"{now} / {cap} W"


def _history_cell(points: Sequence[MemoryPoint], total_bytes: int) -> str:
    return sparkline([p.used_bytes for p in points], total_bytes)


def _process_table(snapshot: Snapshot) -> RenderableType:
    if not snapshot.processes:
        return Text("no GPU processes visible to NVML (other containers' processes are hidden)", style="dim")
    table = Table(title="Processes", title_justify="left", header_style="bold")
    for name, justify in (("GPU", "right"), ("PID", "right"), ("User", "left"), ("Name", "left"),
                          ("GPU memory", "right"), ("mineru-fit", "left")):
        table.add_column(name, justify=justify)
    for p in snapshot.processes:
        table.add_row(
            str(p.gpu_index), str(p.pid), p.user or "?", p.name or "?",
            human(p.used_bytes) if p.used_bytes is not None else "n/a",
            Text(p.engine.label, style="bold green") if p.engine is not None else "",
        )
    return table


def _engine_table(engines: Sequence[EngineState]) -> RenderableType:
    if not engines:
        return Text("engines: none found (no run records; add --engine-url URL)", style="dim")
    table = Table(title="Engines", title_justify="left", header_style="bold")
    for name in ("Engine", "Metrics", "State", "Running", "Waiting", "KV used", "OOM events"):
        table.add_column(name, justify="left" if name in ("Engine", "Metrics", "State") else "right")
    for e in engines:
        label = e.name + (f" {e.current_level}" if e.current_level else "")
        state = Text("ok", style="green") if e.reachable else Text(e.error or "error", style="red")
        table.add_row(
            label, e.metrics_url, state, _count(e.requests_running), _count(e.requests_waiting),
            _kv_cell(e), str(e.oom_total) if e.oom_events else "-",
        )
    return table


def _kv_cell(e: EngineState) -> str:
    if e.kv_cache_usage is None:
        return "-"
    text = f"{e.kv_cache_usage:.0%}"
    if e.max_total_tokens:
        text += f" of {e.max_total_tokens:,} tok"
    return text


def _count(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def _advice_panel(advice: Sequence[Advice]) -> Panel:
    if not advice:
        return Panel(Text("nothing to change", style="green"), title="Advice", title_align="left")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for a in advice:
        body = Text(a.message)
        body.append(f"\n→ {a.action}")
        if a.command:
            body.append("\n$ ", style="dim")
            body.append(a.command, style="bold")
        grid.add_row(Text(a.severity, style=_SEVERITY_STYLE.get(a.severity, "")), body)
    return Panel(grid, title=f"Advice ({len(advice)})", title_align="left")
