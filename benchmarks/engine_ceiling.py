"""How much faster than MinerU's transformers backend any scheduler could be on this machine.

engine_vs_mineru.py's workload (one page: a 1036×1036 layout request, then 7 crops) has a part no
scheduler removes: every image through the vision tower and every prompt through the language
model once. This times that part on the built-in engine's own path (each request prefilled alone,
no padding), then the decode steps it ran, then MinerU's transformers backend on the whole
workload at concurrency 8, in one process one after the other. MinerU's time over the prefill
time is the ratio an engine whose decode steps cost nothing would reach.

    flock /tmp/realsize.lock .venv/bin/python benchmarks/engine_ceiling.py --model DIR
    .venv/bin/python benchmarks/engine_ceiling.py --tiny --out PATH    # the tests' tiny model: JSON shape only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_vs_mineru as B  # noqa: E402  (the same workload, prompts and MinerU driver)

RESULTS = Path(__file__).parent / "results" / "engine_ceiling.json"
CONCURRENCY = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder (benchmarks/realsize.py writes the real-size one)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny random Qwen2-VL (JSON shape, not speed)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    from mineru_fit.engines.builtin.generation import Generator
    from mineru_fit.engines.builtin.jobs import Job, SamplingKey

    torch.set_num_threads(os.cpu_count() or 1)
    shape = B.TINY if args.tiny else B.REAL
    model_dir = args.model
    if args.tiny:
        from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

        model_dir = build_tiny_qwen2vl(Path(tempfile.mkdtemp()) / "tiny")
    if model_dir is None:
        parser.error("--model DIR or --tiny")
    context = B.level_contexts(model_dir)["none"]
    loaded = B.load(model_dir, context, args.tiny)
    mineru, messages = B.mineru_side(loaded)
    layouts, crops = B.page_images(shape)
    key = SamplingKey.from_request(temperature=0, ignore_eos=True, skip_special_tokens=False)
    generator = Generator(loaded, max_model_len=context)
    crop_lengths = [n for _, _, n in shape.crops] * shape.pages

    def jobs_of(prompt: str, images: list[Any], lengths: list[int]) -> list[Job]:
        made = [Job(messages[prompt], [image], key, n, n) for image, n in zip(images, lengths)]
        for job in made:
            generator.encode(job)
        return made

    prefill_s = decode_s = 0.0
    steps = 0
    # MinerU's two steps, as in engine_vs_mineru: every layout, then every crop.
    for jobs in (jobs_of(B.LAYOUT_PROMPT, layouts, [shape.layout[2]] * len(layouts)),
                 jobs_of(B.CONTENT_PROMPT, crops, crop_lengths)):
        for job in jobs:
            start = time.perf_counter()
            generator.prefill(job)
            prefill_s += time.perf_counter() - start
        start = time.perf_counter()
        while generator.rows:
            generator.step()
            steps += 1
        decode_s += time.perf_counter() - start

    lengths = B.forced_lengths(loaded, messages, layouts, crops, shape)
    start = time.perf_counter()
    tokens = B.run_mineru(mineru, loaded, layouts, crops, shape, CONCURRENCY, lengths)
    mineru_s = time.perf_counter() - start

    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "device": "cpu", "torch_threads": torch.get_num_threads()},
        "command": "python benchmarks/engine_ceiling.py " + (
            f"--tiny --out {args.out}" if args.tiny else f"--model {args.model}"),
        "model": "tiny random Qwen2-VL (tests)" if args.tiny else "MinerU2.5-2509 architecture, random weights",
        "dtype": "float32",
        "workload": "engine_vs_mineru.py's, one run",
        "engine_prefill_s": round(prefill_s, 2),
        "engine_decode_s": round(decode_s, 2),
        "engine_decode_steps": steps,
        "mineru_concurrency_8_s": round(mineru_s, 2),
        "mineru_tokens": tokens,
        # An engine whose decode steps cost nothing; this one (each request prefilled alone, rows decoded together).
        "ceiling_ratio_free_decode": round(mineru_s / prefill_s, 3),
        "ratio_prefill_alone_then_decode_together": round(mineru_s / (prefill_s + decode_s), 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    main()
