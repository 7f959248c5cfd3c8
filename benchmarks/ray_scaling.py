"""`parse --ray` on a generated 200-page born-digital PDF (flash tier): pages/s with 1 and 2 CPU workers,
the overhead of --ray with one worker against a plain `parse`, and a paper projection for N workers/GPUs.

Each round runs, in alternating order: a plain parse (one process), then a local Ray cluster with
1 and with 2 CPUs (one flash task per CPU) parsing the same PDF into a fresh folder. The cluster's
start and stop are timed apart from the parse. The overhead figure is the ratio of medians of the
parse walls (target: at most 1.2); with the cluster start it is reported too.

The projection is arithmetic on what was measured here, not a measurement: N workers give at most
min(N x the one-worker rate, the driver's landing rate), where the driver's landing rate
(checkpoint + outputs per page, timed inside the runs) bounds any cluster.
For GPUs the rate per engine actor must be measured on a GPU; the same cap applies, plus the render
rate per CPU (timed here at 200 DPI), times the CPUs that render.

Writes benchmarks/results/ray_scaling.json with the machine, date and command.

    .venv/bin/python benchmarks/ray_scaling.py [--pages 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "ray_scaling.json"
TARGET_RATIO = 1.2
PROJECT_N = (1, 2, 4, 8, 16, 32, 64)
LANDING_S: list[float] = []  # seconds the driver spent landing each page (checkpoint, outputs)


def write_pdf(path: Path, pages: int) -> Path:
    """A born-digital report: a heading and three paragraphs of body text per page."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    body = ("The quarterly figures show steady growth in every region, with the largest gains in the "
            "segments that were reorganised last year. Costs stayed within the plan.")
    c = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    for number in range(1, pages + 1):
        c.setFont("Helvetica-Bold", 16)
        c.drawString(72, 770, f"Section {number}: results and discussion")
        c.setFont("Helvetica", 11)
        y = 740
        for paragraph in range(3):
            text = c.beginText(72, y)
            for line in range(4):
                text.textLine(f"{body[line * 40:(line + 1) * 40 + 40]} ({number}.{paragraph + 1}.{line + 1})")
            c.drawText(text)
            y -= 90
        c.showPage()
    c.save()
    return path


def plain(pdf: Path, out: Path) -> float:
    from mineru_fit.parsing import ParseOptions, TierChoice, parse_documents

    start = time.perf_counter()
    report = parse_documents([pdf], ParseOptions(out_dir=out, force=True), TierChoice("flash", "benchmark"))
    wall = time.perf_counter() - start
    assert report.status.value == "success", report.to_dict()
    return wall


def on_ray(pdf: Path, out: Path, cpus: int, chunk: int) -> dict[str, float]:
    import ray

    from mineru_fit.parsing import ParseOptions
    from mineru_fit.scale import RayJob, parse_on_ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.2", include_dashboard=False,
             log_to_driver=False, logging_level="ERROR")
    up = time.perf_counter() - start
    try:
        start = time.perf_counter()
        result = parse_on_ray([pdf], ParseOptions(out_dir=out, force=True), RayJob(tier="flash", flash_chunk_pages=chunk),
                              say=lambda line: None)
        wall = time.perf_counter() - start
    finally:
        start = time.perf_counter()
        ray.shutdown()
        down = time.perf_counter() - start
    assert result.report.status.value == "success", result.report.to_dict()
    return {"parse_s": wall, "start_s": up, "stop_s": down, "pages": result.report.pages_ok}


def render_rate(pdf: Path, pages: int = 20, dpi: int = 200) -> float:
    """Pages per second one CPU renders for the vlm tier (PDFium at MinerU's 200 DPI)."""
    from mineru_fit.parsing.providers import open_document

    doc = open_document(pdf)
    try:
        start = time.perf_counter()
        for index in range(pages):
            doc.render(index, dpi)
        return pages / (time.perf_counter() - start)
    finally:
        doc.close()


def timed_landing() -> None:
    """Time the driver's share of every page: Book.land (checkpoint, images, and the document at its last page)."""
    import mineru_fit.scale.run as run

    class TimedBook(run.Book):
        def land(self, file_no: int, result: Any) -> None:
            start = time.perf_counter()
            super().land(file_no, result)
            LANDING_S.append(time.perf_counter() - start)

    run.Book = TimedBook  # type: ignore[misc]


def project(per_worker: float, driver_cap: float) -> dict[str, Any]:
    """Paper arithmetic, not a measurement: N workers at the one-worker rate, capped by the driver."""
    return {
        "method": "paper: min(N x the one-worker rate, the driver's landing cap); linear is the upper bound — "
                  "see scaling_efficiency_2_workers for what this machine did",
        "flash_cpu_workers_pages_per_s": {str(n): min(n * per_worker, driver_cap) for n in PROJECT_N},
        "vlm_gpus": {"per_actor_pages_per_s": None,
                     "formula": "min(N x per-actor pages/s, driver landing cap, render rate x rendering CPUs)",
                     "note": "no GPU here: measure one actor's pages/s on a GPU and put it in the formula"},
    }


def reproject() -> None:
    """Recompute the projection of the JSON on disk from its measured figures (after a change of method)."""
    body = json.loads(RESULTS.read_text())
    body["projection"] = project(body["ray"]["ray_1"]["pages_per_s"], body["driver_landing"]["pages_per_s_cap"])
    RESULTS.write_text(json.dumps(body, indent=2) + "\n")


def stats(values: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reproject", action="store_true", help="only recompute the projection of the last result")
    parser.add_argument("--chunk", type=int, default=None,
                        help="pages per flash task (default: RayJob's, a file's share of the CPUs)")
    args = parser.parse_args()
    if args.reproject:
        reproject()
        return
    from loguru import logger

    logger.remove()
    logging.getLogger("pypdfium2").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    timed_landing()
    walls: dict[str, list[Any]] = {"plain": [], "ray_1": [], "ray_2": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pdf = write_pdf(work / "report.pdf", args.pages)
        plain(pdf, work / "warm")
        for round_no in range(args.rounds):
            order = ["plain", "ray_1", "ray_2"]
            for name in order if round_no % 2 == 0 else order[::-1]:
                out = work / f"{name}-{round_no}"
                walls[name].append(plain(pdf, out) if name == "plain" else on_ray(pdf, out, int(name[-1]), args.chunk))
                print(name, walls[name][-1], flush=True)
        render = render_rate(pdf)
    plain_s = statistics.median(walls["plain"])
    ray = {name: {"parse": stats([w["parse_s"] for w in walls[name]]),
                  "cluster_start": stats([w["start_s"] for w in walls[name]]),
                  "cluster_stop": stats([w["stop_s"] for w in walls[name]])} for name in ("ray_1", "ray_2")}
    rate = {name: args.pages / ray[name]["parse"]["median_s"] for name in ray}
    efficiency = rate["ray_2"] / (2 * rate["ray_1"])
    landing = statistics.median(LANDING_S)
    driver_cap = 1 / landing
    ratio = ray["ray_1"]["parse"]["median_s"] / plain_s
    with_start = (ray["ray_1"]["parse"]["median_s"] + ray["ray_1"]["cluster_start"]["median_s"]) / plain_s
    body = {
        "benchmark": "ray_scaling",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "note": "2-core CPU dev machine shared with other engineers' jobs: absolute figures are noisy"},
        "command": f"python benchmarks/ray_scaling.py --pages {args.pages} --rounds {args.rounds}"
                   + (f" --chunk {args.chunk}" if args.chunk else ""),
        "input": {"pages": args.pages, "kind": "generated born-digital PDF (reportlab), flash tier",
                  "pages_per_flash_task": args.chunk or "auto (a file's share of the CPUs, at least 16)"},
        "plain_parse": {**stats(walls["plain"]), "pages_per_s": args.pages / plain_s},
        "ray": {name: {**ray[name], "pages_per_s": rate[name]} for name in ray},
        "overhead": {"target": f"--ray with 1 worker / plain parse <= {TARGET_RATIO} (ratio of median parse walls)",
                     "ratio": ratio, "pass": ratio <= TARGET_RATIO, "ratio_with_cluster_start": with_start},
        "scaling_efficiency_2_workers": efficiency,
        "driver_landing": {"median_s_per_page": landing, "pages_per_s_cap": driver_cap, "pages_timed": len(LANDING_S)},
        "render_200dpi_pages_per_s_per_cpu": render,
        "projection": project(rate["ray_1"], driver_cap),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(body, indent=2) + "\n")
    print(json.dumps({k: body[k] for k in ("plain_parse", "ray", "overhead", "scaling_efficiency_2_workers")}, indent=2))


if __name__ == "__main__":
    main()
