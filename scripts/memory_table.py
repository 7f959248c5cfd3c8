"""The README's memory table (and a chart), regenerated from docs/measurements/ only.

Each row is a level measured by benchmarks/gpu_memory.py on a real GPU, beside the planner's
prediction and the guide's claimed share of the unoptimised peak. With no measurement on
file the table says so: no figure in the README comes from anywhere but a measurement file.

    python scripts/memory_table.py [--readme README.md] [--measurements docs/measurements] [--chart]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- memory-table:start -->"
END = "<!-- memory-table:end -->"
# The guide's table: memory at each optimisation level as a share of the unoptimised peak.
GUIDE_CLAIMS = {"none": "100%", "basic": "60–80%", "aggressive": "30–50%", "extreme": "20–30%"}
TERMS = ("runtime", "weights", "kv_cache", "activations", "cuda_graphs", "margin")


def latest_measurements(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The newest gpu_memory record per GPU."""
    newest: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("benchmark") not in ("gpu_memory", "make_gpu") or not record.get("machine", {}).get("gpu"):
            continue
        if not any(row.get("measured_bytes") for row in record.get("summary", [])):
            continue  # e.g. `make gpu --skip memory_table`: no level measured, nothing for this table
        gpu = record["machine"]["gpu"]
        if gpu not in newest or record["date"] > newest[gpu][1]["date"]:
            newest[gpu] = (path, record)
    return list(newest.values())


def _gib(value: Optional[float]) -> str:
    return f"{value / 2**30:.2f} GiB" if value else "—"


def render_table(path: Path, record: dict[str, Any]) -> str:
    machine = record["machine"]
    rows = {r["level"]: r for r in record["summary"]}
    levels = {r["level"]: r for r in record["levels"]}
    base = (rows.get("none") or {}).get("measured_bytes")
    lines = [
        f"**{machine['gpu']}** (driver {machine.get('driver')}, torch {machine.get('torch')}), "
        f"{record['date'][:10]}, `{record['command']}` → [{path.name}](docs/measurements/{path.name})",
        "",
        "| level | predicted | measured peak | error | share of `none` | guide's claim | pages/s | tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for level, claim in GUIDE_CLAIMS.items():
        row = rows.get(level)
        if row is None:
            continue
        measured = row.get("measured_bytes")
        share = f"{100 * measured / base:.0f}%" if measured and base else "—"
        err = f"{row['error_pct']:+.1f}%" if row.get("error_pct") is not None else (row.get("error") or "—")
        m = (levels.get(level) or {}).get("measured") or {}
        lines.append(
            f"| {level} | {_gib(row.get('predicted_bytes'))} | {_gib(measured)} | {err} | {share} | {claim} | "
            f"{m.get('pages_per_s') or '—'} | {m.get('tokens_per_s') or '—'} |"
        )
    calibrated = [r for r in record["summary"] if r.get("error_calibrated_pct") is not None]
    if calibrated:
        lines += ["", "With this GPU's measured CUDA context (now in the planner's calibration.json) the planner "
                      "predicts " + "; ".join(f"{r['level']} {_gib(r['predicted_calibrated_bytes'])} "
                                              f"({r['error_calibrated_pct']:+.1f}%)" for r in calibrated) + "."]
    lines += _serve_lines(record.get("serve") or {})
    floor = next((r for r in record["summary"] if "peak_over_floor" in r), None)
    if floor:
        lines.append("")
        lines.append(f"extreme: peak {_gib(floor['measured_bytes'])} = {floor['peak_over_floor']:.2f} × its physical "
                     f"floor of {_gib(floor['floor_bytes'])} (CUDA context + 4-bit weights + one largest image's "
                     "activations + KV for one request).")
    return "\n".join(lines)


def _serve_lines(serve: dict[str, Any]) -> list[str]:
    """`make gpu`'s server figures under the table: throughput and the out-of-memory burst."""
    lines = []
    rows = [r for r in serve.get("throughput") or [] if "tokens_per_s" in r]
    if rows:
        lines += ["", f"Built-in engine server at level {serve.get('level')}, {serve.get('max_tokens')} tokens per "
                      "request: " + "; ".join(f"concurrency {r['concurrency']}: {r['requests_per_s']} requests/s, "
                                              f"{r['tokens_per_s']} tokens/s" for r in rows) + "."]
    oom = serve.get("oom") or {}
    if oom.get("burst") and oom.get("cap"):
        events = oom["oom_events"]
        lines += ["", f"Under an allocator cap of {_gib(oom['cap']['cap_bytes'])} (below the need): "
                      f"{oom['burst']['requests']} requests in one burst, answered {oom['burst']['statuses']}; "
                      f"{events.get('split', 0):g} batch splits, {events.get('shrink', 0):g} image shrinks, "
                      f"{events.get('rejected', 0):g} answered 503; then {oom['recovery']['statuses']}."]
    return lines


def render_section(measurements: list[tuple[Path, dict[str, Any]]]) -> str:
    if not measurements:
        return ("No GPU measurement has landed yet, so this README quotes no memory figure. "
                "`make gpu` on one H100/H200 (docs/gpu-run.md) writes one to docs/measurements/ and puts it "
                "here, beside the guide's claims (none 100%, basic 60–80%, aggressive 30–50%, extreme 20–30%).")
    return "\n\n".join(render_table(path, record) for path, record in measurements)


def update_readme(readme: Path, section: str) -> bool:
    """Replace what stands between the markers; True when the file changed."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} … {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{section}\n{END}{tail}"
    if new != text:
        readme.write_text(new)
        return True
    return False


def render_chart(measurements: list[tuple[Path, dict[str, Any]]], out: Path) -> Optional[Path]:
    """Each level's memory stacked by term, predicted beside measured (one figure per run)."""
    if not measurements:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, record = measurements[0]
    order = list(GUIDE_CLAIMS)
    levels = sorted((r for r in record["levels"] if "plan" in r),
                    key=lambda r: order.index(r["level"]) if r["level"] in order else len(order))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = range(len(levels))
    bottoms = [0.0] * len(levels)
    for term in TERMS:
        values = [r["plan"]["terms"].get(term, 0) / 2**30 for r in levels]
        ax.bar([i - 0.2 for i in x], values, 0.38, bottom=bottoms, label=f"predicted: {term.replace('_', ' ')}")
        bottoms = [b + v for b, v in zip(bottoms, values)]
    measured = [((r.get("measured") or {}).get("nvml_peak_bytes") or 0) / 2**30 for r in levels]
    ax.bar([i + 0.2 for i in x], measured, 0.38, color="black", label="measured peak (NVML)")
    ax.set_xticks(list(x), [r["level"] for r in levels])
    ax.set_ylabel("GiB")
    ax.set_title(f"MinerU2.5 built-in engine on {record['machine']['gpu']} ({record['date'][:10]})")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--measurements", type=Path, default=ROOT / "docs" / "measurements")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "measurements" / "memory-by-level.png")
    args = parser.parse_args()
    measurements = latest_measurements(args.measurements)
    changed = update_readme(args.readme, render_section(measurements))
    chart = render_chart(measurements, args.chart)
    print(f"{args.readme}: {'updated' if changed else 'unchanged'}; {len(measurements)} measurement(s)"
          + (f"; chart {chart}" if chart else ""))


if __name__ == "__main__":
    sys.exit(main())
