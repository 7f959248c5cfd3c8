"""`mineru-fit devices`: the GPUs this process may use, their memory and who holds it.

`--json` prints one object: {"schema": "mineru-fit/devices", "version": 1, "backend": "nvml" |
"torch" | "mps" | "fake" | "none", "gpus": [{"index", "nvml_index", "name", "uuid", "memory":
{"total_bytes", "free_bytes", "used_bytes", "reserved_bytes"}, "compute_capability": [major,
minor] | null, "utilization_pct", "memory_utilization_pct", "temperature_c", "power_w",
"power_limit_w", "processes": [{"pid", "name", "used_bytes" | null, "kind"}], "mig_devices":
[...]}], "driver_version", "cuda_driver_version", "nvml_memory_v2", "reason" (why gpus is
empty), "warnings": [...], "simulated_from": path | null}. Values NVML will not give are null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from mineru_fit.cli.app import app
from mineru_fit.devices import Inventory, read_inventory, read_machine_inventory
from mineru_fit.devices.snapshot import inventory_to_snapshot, write_snapshot
from mineru_fit.settings import load_settings
from mineru_fit.units import gib, human

JSON_SCHEMA = "mineru-fit/devices"


@app.command("devices")
def devices(
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    simulate: Optional[Path] = typer.Option(
        None, "--simulate", metavar="FILE", help="Replay a snapshot (from --record) instead of asking NVML."
    ),
    record: Optional[Path] = typer.Option(
        None, "--record", metavar="FILE", help="Write every GPU NVML sees to FILE, for --simulate elsewhere."
    ),
    gpu: Optional[int] = typer.Option(
        None, "--gpu", min=0, metavar="N", help="Only CUDA GPU N (overrides MINERU_DEVICE_MODE)."
    ),
) -> None:
    """List GPUs: memory used/free/total, compute capability, load, temperature, power, processes."""
    device_mode = f"cuda:{gpu}" if gpu is not None else load_settings().device_mode
    inventory = read_inventory(device_mode, simulate=simulate)
    console = Console()
    if record is not None:
        # The whole machine, unfiltered: a replay can then apply any CUDA_VISIBLE_DEVICES or --gpu.
        machine = read_machine_inventory(simulate)
        write_snapshot(inventory_to_snapshot(machine), record)
        err = Console(stderr=True)
        err.print(f"recorded {len(machine.gpus)} GPU(s) to {record}", highlight=False)
    if json_output:
        body: dict[str, Any] = {"schema": JSON_SCHEMA, "version": 1, **inventory.to_dict()}
        body["simulated_from"] = str(simulate) if simulate is not None else None
        typer.echo(json.dumps(body, indent=2))
        return
    render_inventory(inventory, console, simulated_from=simulate)


def render_inventory(inventory: Inventory, console: Console, simulated_from: Optional[Path] = None) -> None:
    """Print the GPU table, the process table, the driver line and any warnings."""
    if simulated_from is not None:
        console.print(f"[dim]simulated from {simulated_from}[/]", highlight=False)
    if not inventory.gpus:
        console.print(f"no CUDA GPU found: {inventory.reason or 'unknown reason'}", highlight=False)
        _print_warnings(inventory, console)
        return
    console.print(_gpu_table(inventory))
    processes = _process_table(inventory)
    if processes.row_count:
        console.print(processes)
    else:
        console.print("no GPU processes visible to NVML (other containers' processes are hidden)", highlight=False)
    console.print(_driver_line(inventory), highlight=False)
    _print_warnings(inventory, console)


def _gpu_table(inventory: Inventory) -> Table:
    show_reserved = any(g.memory.reserved_bytes for g in inventory.gpus)
    table = Table(title="GPUs", title_justify="left")
    table.add_column("GPU", justify="right")
    table.add_column("Name")
    table.add_column("Used", justify="right")
    if show_reserved:
        table.add_column("Reserved", justify="right")
    table.add_column("Free", justify="right")
    table.add_column("Total", justify="right")
    table.add_column("CC", justify="center")
    table.add_column("Util", justify="right")
    table.add_column("Temp", justify="right")
    table.add_column("Power", justify="right")
    for g in inventory.gpus:
        index = str(g.index)
        if g.nvml_index is not None and g.nvml_index != g.index:
            index += f" (smi {g.nvml_index})"
        row = [index, g.name, gib(g.memory.used_bytes)]
        if show_reserved:
            row.append(gib(g.memory.reserved_bytes))
        row += [
            gib(g.memory.free_bytes),
            gib(g.memory.total_bytes),
            f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else "-",
            _or_dash(g.utilization_pct, "{} %"),
            _or_dash(g.temperature_c, "{} °C"),
            _power(g.power_w, g.power_limit_w),
        ]
        table.add_row(*row)
    return table


def _process_table(inventory: Inventory) -> Table:
    table = Table(title="Processes", title_justify="left")
    table.add_column("GPU", justify="right")
    table.add_column("PID", justify="right")
    table.add_column("Kind")
    table.add_column("Name")
    table.add_column("Memory", justify="right")
    for g in inventory.gpus:
        for p in g.processes:
            used = human(p.used_bytes) if p.used_bytes is not None else "n/a"
            table.add_row(str(g.index), str(p.pid), p.kind, p.name or "?", used)
    return table


def _driver_line(inventory: Inventory) -> str:
    parts = [f"backend {inventory.backend}"]
    if inventory.driver_version:
        parts.append(f"driver {inventory.driver_version}")
    if inventory.cuda_driver_version:
        parts.append(f"CUDA {inventory.cuda_driver_version}")
    if inventory.backend in ("nvml", "fake"):
        parts.append(
            "NVML memory v2" if inventory.nvml_memory_v2 else "NVML memory v1 (used includes the driver reserve)"
        )
    return " · ".join(parts)


def _print_warnings(inventory: Inventory, console: Console) -> None:
    for warning in inventory.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _or_dash(value: Optional[int], fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _power(power_w: Optional[float], limit_w: Optional[float]) -> str:
    if power_w is None and limit_w is None:
        return "-"
    now = "-" if power_w is None else f"{power_w:.0f}"
    cap = "-" if limit_w is None else f"{limit_w:.0f}"
    return f"{now} / {cap} W"
