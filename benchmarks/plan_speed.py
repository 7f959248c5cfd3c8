"""How fast `mineru-fit plan --json` answers: the whole command and the planner alone.

Writes benchmarks/results/plan_speed.json with the machine, date and command. The target
(issue 2) is well under 1 s for the command on a 2-core machine.

    .venv/bin/python benchmarks/plan_speed.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "plan_speed.json"
CLI = str(Path(sys.executable).parent / "mineru-fit")
COMMANDS = {
    "plan --vram 8 --json": [CLI, "plan", "--vram", "8", "--json"],
    "plan --json (this machine)": [CLI, "plan", "--json"],
    "plan --profiles --json": [CLI, "plan", "--profiles", "--json"],
}


def time_command(argv: list[str], runs: int) -> dict[str, float]:
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls)}


def time_planner(runs: int) -> dict[str, float]:
    from mineru_fit.models import default_spec
    from mineru_fit.planner import Hardware, PlanRequest, make_report

    spec = default_spec()
    walls = []
    for engine in ("builtin", "sglang", "vllm") * runs:
        start = time.perf_counter()
        make_report(spec, Hardware.from_vram(8), PlanRequest(engine=engine))
        walls.append(time.perf_counter() - start)
    return {"median_s": statistics.median(walls), "max_s": max(walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    result = {
        "benchmark": "plan_speed",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "command": f"python benchmarks/plan_speed.py --runs {args.runs}",
        "target": "plan --json well under 1 s",
        "commands": {name: time_command(argv, args.runs) for name, argv in COMMANDS.items()},
        "planner_make_report": time_planner(args.runs),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for name, t in result["commands"].items():
        print(f"{name:32s} median {t['median_s'] * 1000:6.0f} ms  max {t['max_s'] * 1000:6.0f} ms")
    p = result["planner_make_report"]
    print(f"{'planner alone (make_report)':32s} median {p['median_s'] * 1000:6.1f} ms  max {p['max_s'] * 1000:6.1f} ms")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
