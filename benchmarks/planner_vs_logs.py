"""The planner's engine accounting against public vLLM/SGLang startup logs of Qwen2-VL-family models.

    python benchmarks/planner_vs_logs.py            # writes benchmarks/results/planner_vs_logs.json
    python benchmarks/planner_vs_logs.py --fit      # also scans the vision width over the "fit" split

Records are tests/data/engine_logs/*.json (one public log each, with its source and the
reliability of every input). For each: predicted vs logged weights, KV GiB and KV tokens, and
whether a logged failed start is predicted not to fit; then the error per engine and version.
Pure arithmetic over committed files: no GPU, no network.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from mineru_fit.models.config import read_config, read_image_spec
from mineru_fit.models.derive import derive_tensors
from mineru_fit.models.registry import default_spec
from mineru_fit.models.spec import ModelSpec
from mineru_fit.planner import constants as C
from mineru_fit.planner.logbench import Comparison, LogRecord, compare, summarize

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "tests" / "data" / "engine_logs"
OUT = ROOT / "benchmarks" / "results" / "planner_vs_logs.json"


def load_records(folder: Path = LOGS) -> list[LogRecord]:
    return [LogRecord.model_validate_json(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


def spec_for(record: LogRecord, folder: Path = LOGS) -> ModelSpec:
    """The record's model: the shipped MinerU2.5 spec, or a config.json written from the public card."""
    if record.config.startswith("shipped:"):
        return default_spec()
    config = read_config(folder / record.config)
    image = read_image_spec(folder / record.preprocessor) if record.preprocessor else default_spec().image
    return ModelSpec(
        name=record.model, source=record.config, text=config.text, vision=config.vision, image=image,
        torch_dtype=config.torch_dtype, tensors=derive_tensors(config.text, config.vision), tensors_from_header=False,
    )


def run(records: list[LogRecord]) -> list[Comparison]:
    return [compare(r, spec_for(r)) for r in records]


def fit_vision_widths(records: list[LogRecord], grid: list[float]) -> list[dict]:
    """Per engine mode, the KV errors of the fit split's records with a prediction for each vision
    width (one width for both vision variants: too few logs to fit them apart)."""
    rows = []
    fit = [r for r in records if r.split == "fit" and r.engine == "vllm"]
    saved = dict(C.ENGINE_VISION_ACT_WIDTHS)
    try:
        for width in grid:
            C.ENGINE_VISION_ACT_WIDTHS.update({k: width for k in saved})
            row: dict = {"width": width}
            for c, r in zip(run(fit), fit):
                err = c.kv_tokens_error if c.kv_tokens_error is not None else c.kv_gib_error
                if err is not None or c.logged_failed:
                    row[c.id] = {"kv_error": err, "fits": c.predicted_fits, "memory_failure": c.logged_failed}
            rows.append(row)
    finally:
        C.ENGINE_VISION_ACT_WIDTHS.clear()
        C.ENGINE_VISION_ACT_WIDTHS.update(saved)
    return rows


def report(records: list[LogRecord], results: list[Comparison]) -> dict:
    by_id = {r.id: r for r in records}
    return {
        "about": __doc__.strip().splitlines()[0],
        "command": "python benchmarks/planner_vs_logs.py",
        "records": len(records),
        "constants": {"ENGINE_VISION_ACT_WIDTHS": C.ENGINE_VISION_ACT_WIDTHS,
                      "VLLM_NON_TORCH_BYTES": C.VLLM_NON_TORCH_BYTES,
                      "VLLM_GRAPH_MIN_BYTES": C.VLLM_GRAPH_MIN_BYTES,
                      "VLLM_GRAPH_BYTES_PER_HIDDEN": C.VLLM_GRAPH_BYTES_PER_HIDDEN},
        "summary": summarize(results),
        "sglang_records": [r.id for r in records if r.engine == "sglang"],
        "per_log": [
            {**c.model_dump(), "gpu": by_id[c.id].gpu, "exclusion": by_id[c.id].exclusion}
            for c in results
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="scan the vision width over the fit split")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    records = load_records()
    results = run(records)
    data = report(records, results)
    if args.fit:
        data["vision_width_scan"] = fit_vision_widths(records, [float(w) for w in range(8, 31, 2)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for c in results:
        fraction = (f"  fraction {c.predicted_fraction:.4f} vs {c.logged_fraction}" if c.logged_fraction is not None
                    and c.predicted_fraction is not None else "")
        print(f"{c.id:55s} w {_pct(c.weights_error):>7s}  kv tokens {_pct(c.kv_tokens_error):>7s}  "
              f"kv GiB {_pct(c.kv_gib_error):>7s}  memory failure={c.logged_failed} fits={c.predicted_fits}{fraction}"
              + (f"  (assumed inputs: kv tokens {_pct(c.assumed_kv_tokens_error)}, kv GiB {_pct(c.assumed_kv_gib_error)})"
                 if c.assumed_kv_tokens_error is not None or c.assumed_kv_gib_error is not None else ""))
    print(json.dumps(data["summary"]["by_engine"], indent=2))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


if __name__ == "__main__":
    sys.exit(main())
