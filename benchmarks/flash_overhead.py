"""What `mineru-fit parse --tier flash` costs over calling docvortex directly on the same PDFs.

Both sides write Markdown and images for every PDF: docvortex through `docvortex.convert` (parse,
render, write), ours through `parse_documents` (page checks, docvortex, content_list, Markdown,
page JSON, checkpoints; --force, so nothing is resumed). Rounds alternate the order in one process,
after a warm-up of each; the ratio of the medians is the figure (target: at most 1.2). The same is
timed as commands (the console script against a python one-liner), for information.

Writes benchmarks/results/flash_overhead.json with the machine, date and command.

    .venv/bin/python benchmarks/flash_overhead.py [EVAL_DIR] [--rounds 5]

EVAL_DIR defaults to ../shared/eval relative to the repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "flash_overhead.json"
CLI = str(Path(sys.executable).parent / "mineru-fit")
TARGET_RATIO = 1.2
DOCVORTEX_SCRIPT = """
import sys, docvortex
from docvortex.errors import DocumentError
if __name__ == "__main__":
    out = sys.argv[1]
    for pdf in sys.argv[2:]:
        name = pdf.rsplit("/", 1)[-1][:-4]
        try:
            docvortex.convert(pdf, f"{out}/{name}/{name}.md", overwrite=True)
        except DocumentError:
            pass
"""


REFUSED: set[str] = set()  # PDFs docvortex refuses (scanned): timed in "all", left out of "born_digital"


def docvortex_direct(pdfs: list[Path], out: Path) -> float:
    import docvortex
    from docvortex.errors import DocumentError

    start = time.perf_counter()
    for pdf in pdfs:
        try:
            docvortex.convert(pdf, out / pdf.stem / f"{pdf.stem}.md", overwrite=True)
        except DocumentError:  # a scanned PDF: docvortex refuses it, as a direct caller would see
            REFUSED.add(pdf.name)
    return time.perf_counter() - start


def rounds(pdfs: list[Path], work: Path, count: int, tag: str) -> dict[str, object]:
    """Alternate the two sides `count` times; the ratio of their medians."""
    direct, ours = [], []
    for round_no in range(count):
        pair = [("dv", docvortex_direct), ("mf", mineru_fit_flash)]
        for name, fn in pair if round_no % 2 == 0 else pair[::-1]:
            (direct if name == "dv" else ours).append(fn(pdfs, work / f"{tag}-{name}{round_no}"))
    ratio = statistics.median(ours) / statistics.median(direct)
    return {"pdfs": [p.name for p in pdfs], "docvortex_direct": summary(direct), "mineru_fit_flash": summary(ours),
            "ratio": ratio, "pass": ratio <= TARGET_RATIO}


def mineru_fit_flash(pdfs: list[Path], out: Path) -> float:
    from mineru_fit.parsing import ParseOptions, TierChoice, parse_documents

    start = time.perf_counter()
    parse_documents(pdfs, ParseOptions(out_dir=out, force=True), TierChoice("flash", "benchmark"))
    return time.perf_counter() - start


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: a scanned PDF was reported as needing the vlm tier
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - start


def summary(walls: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", nargs="?", default=None, help="folder of PDFs (default: ../shared/eval)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    eval_dir = Path(args.eval_dir) if args.eval_dir else REPO.parent / "shared" / "eval"
    pdfs = sorted(eval_dir.glob("*.pdf"))
    if not pdfs:
        raise SystemExit(f"no PDFs in {eval_dir}")
    from loguru import logger

    logger.remove()  # docvortex logs every table at DEBUG; the same for both sides
    logging.getLogger("pypdfium2").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        docvortex_direct(pdfs, work / "warm-dv")
        mineru_fit_flash(pdfs, work / "warm-mf")
        timings = {"all": rounds(pdfs, work, args.rounds, "all")}
        born_digital = [p for p in pdfs if p.name not in REFUSED]
        if REFUSED and born_digital:
            timings["born_digital"] = rounds(born_digital, work, args.rounds, "bd")
        script = work / "dv.py"
        script.write_text(DOCVORTEX_SCRIPT)
        cmd_direct, cmd_ours = [], []
        for round_no in range(max(1, args.rounds // 2)):
            cmd_direct.append(timed([sys.executable, str(script), str(work / f"cdv{round_no}"), *map(str, pdfs)]))
            cmd_ours.append(timed([CLI, "parse", *map(str, pdfs), "--tier", "flash", "--force", "--no-progress",
                                   "-o", str(work / f"cmf{round_no}")]))
    result = {
        "benchmark": "flash_overhead",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "command": " ".join(["python benchmarks/flash_overhead.py", *([args.eval_dir] if args.eval_dir else []),
                             f"--rounds {args.rounds}"]),
        "eval_dir": "../shared/eval" if not args.eval_dir else args.eval_dir,
        "pdfs": [{"name": p.name, "bytes": p.stat().st_size, "refused_by_docvortex": p.name in REFUSED} for p in pdfs],
        "target": f"mineru-fit flash / docvortex direct <= {TARGET_RATIO} (ratio of medians, one process)",
        "in_process": timings,
        "pass": all(t["pass"] for t in timings.values()),
        "commands": {"docvortex_direct": summary(cmd_direct), "mineru_fit_parse": summary(cmd_ours),
                     "ratio": statistics.median(cmd_ours) / statistics.median(cmd_direct)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for tag, t in timings.items():
        print(f"{tag:13s} docvortex direct median {t['docvortex_direct']['median_s']:6.2f} s, mineru-fit flash "
              f"{t['mineru_fit_flash']['median_s']:6.2f} s: ratio {t['ratio']:.3f} (target <= {TARGET_RATIO})")
    print(f"{'as commands':13s} ratio {result['commands']['ratio']:.3f}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
