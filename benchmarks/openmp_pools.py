"""Why engine_vs_mineru.py runs MinerU's side in a thread of its own: the engine's decode step
before and after MinerU's generate ran in the main thread, and after it ran in a thread that ended.

torch's OpenMP keeps a pool of workers for each thread that has run a parallel region; the engine
runs its model in its batcher's thread. One process, the tiny model on the CPU, a decode-heavy
workload (engine_vs_mineru's tiny shape with 8× the output tokens), concurrency 8; per phase the
engine's run time and its mean decode step (Generator.step, timed around the call).

    .venv/bin/python benchmarks/openmp_pools.py [--out benchmarks/results/openmp_pools.json]
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

import engine_vs_mineru as B  # noqa: E402  (beside this script: the workload and both drivers)

RESULTS = Path(__file__).parent / "results" / "openmp_pools.json"
OUTPUT_SCALE = 8
CONCURRENCY = 8
PAGES = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sys.path.insert(0, str(B.ROOT / "tests"))
    import torch
    from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

    from mineru_fit.engines.builtin import generation

    torch.set_num_threads(os.cpu_count() or 1)
    # The model `benchmarks/realsize.py --tiny` builds, built in a thread that ends: building it in
    # the main thread runs parallel work there too, and the engine is slow from its first run.
    model_dir = B.in_own_thread(lambda: build_tiny_qwen2vl(Path(tempfile.mkdtemp()) / "tiny",
                                                           vision={"embed_dim": 64}))
    shape = B.Shape(layout=(224, 224, B.TINY.layout[2] * OUTPUT_SCALE),
                    crops=tuple((w, h, n * OUTPUT_SCALE) for w, h, n in B.TINY.crops), pages=PAGES)
    loaded = B.load(model_dir, 2048, tiny=True)
    mineru, messages = B.mineru_side(loaded)
    layouts, crops = B.page_images(shape)
    lengths = B.forced_lengths(loaded, messages, layouts, crops, shape)

    steps = {"seconds": 0.0, "count": 0}
    step = generation.Generator.step

    def timed_step(self: Any) -> Any:
        start = time.perf_counter()
        try:
            return step(self)
        finally:
            steps["seconds"] += time.perf_counter() - start
            steps["count"] += 1

    generation.Generator.step = timed_step  # type: ignore[method-assign]

    def engine(phase: str) -> dict[str, Any]:
        steps.update(seconds=0.0, count=0)
        start = time.perf_counter()
        tokens = B.run_engine(loaded, messages, layouts, crops, shape, CONCURRENCY, 2048)
        return {"phase": phase, "engine_s": round(time.perf_counter() - start, 3), "tokens": tokens,
                "decode_steps": steps["count"], "decode_step_ms": round(1000 * steps["seconds"] / steps["count"], 3)}

    def mineru_side() -> int:
        return B.run_mineru(mineru, loaded, layouts, crops, shape, CONCURRENCY, lengths)

    engine("warm-up")
    phases = [engine("before MinerU ran")]
    B.in_own_thread(mineru_side)
    phases.append(engine("after MinerU ran in a thread of its own"))
    mineru_side()
    phases.append(engine("after MinerU ran in the main thread"))
    phases.append(engine("again, later"))
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "command": "python benchmarks/openmp_pools.py",
        "model": "tiny random Qwen2-VL (tests)",
        "workload": {"pages": PAGES, "concurrency": CONCURRENCY, "tokens_per_run": phases[0]["tokens"]},
        "phases": phases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(phases, indent=2))


if __name__ == "__main__":
    main()
