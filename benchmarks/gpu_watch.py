"""One gpu_memory worker under `mineru-fit monitor watch`, with a `monitor --once --json` snapshot.

The worker prints LOADED (the watch's load phase ends), FIRST_BATCH_DONE (its first-request
phase ends), then HOLDING <pid> and keeps its memory until the hold file appears: the snapshot is
taken then, so it sees the process at its plateau. Everything runs through the public CLI
(`python -m mineru_fit ...`), as a user would run it.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

from gpu_procs import cli, kill_tree

READY_PATTERN = "^LOADED"
PHASE_MARKER = "^FIRST_BATCH_DONE"


def snapshot(pid: int, gpu_index: Optional[int], timeout_s: float = 60.0) -> dict[str, Any]:
    """`mineru-fit monitor --once --json`: the worker's row and its GPU's used memory."""
    cmd = cli("monitor", "--once", "--json") + (["--gpu", str(gpu_index)] if gpu_index is not None else [])
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:g} s", "command": cmd[2:]}
    out: dict[str, Any] = {"command": ["mineru-fit", *cmd[3:]], "exit_code": done.returncode,
                           "took_s": round(time.perf_counter() - started, 2)}
    try:
        data = json.loads(done.stdout)
    except ValueError:
        out["error"] = (done.stderr.strip().splitlines() or ["no JSON on stdout"])[-1]
        return out
    rows = [p for g in data.get("gpus", []) for p in g.get("processes", []) if p.get("pid") == pid]
    out.update(
        time=data.get("time"), reason=data.get("reason"),
        process_used_bytes=sum(p["used_bytes"] or 0 for p in rows) if rows else None,
        gpu_used_bytes=[g["memory"]["used_bytes"] for g in data.get("gpus", [])],
        processes_listed=sum(len(g.get("processes", [])) for g in data.get("gpus", [])),
    )
    return out


def _pump(stream: Any, lines: "queue.Queue[Optional[str]]") -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_watched(worker: list[str], folder: Path, *, gpu_index: Optional[int] = 0,
                timeout_s: float = 240.0) -> tuple[Optional[int], str, str, dict[str, Any]]:
    """Run `monitor watch -- worker`; return (exit code or None on timeout, stdout, stderr, what the
    monitor saw: the watch JSON and the snapshot)."""
    folder.mkdir(parents=True, exist_ok=True)
    watch_out, hold, err_path = folder / "watch.json", folder / "release", folder / "stderr.txt"
    cmd = cli("monitor", "watch", "--interval-ms", "50", "--out", str(watch_out), "--ready-pattern", READY_PATTERN,
              "--phase-marker", PHASE_MARKER, "--", *worker, "--hold-file", str(hold))
    deadline = time.monotonic() + timeout_s
    taken: dict[str, Any] = {}
    out_lines: list[str] = []
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        code: Optional[int] = None
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                break
            if time.monotonic() > deadline:
                kill_tree(proc.pid)  # the watch and the worker under it
                proc.wait()
                break
            out_lines.append(line)
            if line.startswith("HOLDING "):
                taken = snapshot(int(line.split()[1]), gpu_index)
                taken["worker_pid"] = int(line.split()[1])
                hold.touch()
    stderr = err_path.read_text()
    watch = json.loads(watch_out.read_text()) if watch_out.is_file() else None
    return code, "".join(out_lines), stderr, {"watch": watch, "once": taken or None}
