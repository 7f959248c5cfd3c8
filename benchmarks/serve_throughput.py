"""Requests/s and tokens/s of the built-in engine at concurrency 1, 4 and 16.

The tiny random Qwen2-VL from the tests, on the CPU (or the GPU when there is one): the
numbers measure the server, the batcher and the engine's decode loop, not a real model.
The real-size architecture with random weights on a GPU is measured by issue 8's
benchmarks. Writes benchmarks/results/serve_throughput.json with the machine, date and command.

    .venv/bin/python benchmarks/serve_throughput.py [--requests 32] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = Path(__file__).parent / "results" / "serve_throughput.json"


def data_url(width: int, height: int) -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((10, 10), "MinerU throughput " * 4, fill="black")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def run_level(base: str, concurrency: int, requests: int, max_tokens: int) -> dict[str, float]:
    import httpx

    bodies = [{
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(200 + 8 * (i % 8), 160)}},
            {"type": "text", "text": "\nText Recognition:"}]}],
        "temperature": 0, "max_tokens": max_tokens,
    } for i in range(requests)]
    latencies: list[float] = []

    def one(body: dict) -> int:
        start = time.perf_counter()
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
        latencies.append(time.perf_counter() - start)
        reply.raise_for_status()
        return reply.json()["usage"]["completion_tokens"]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, bodies))
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency, "requests": requests, "wall_s": round(wall, 3),
        "requests_per_s": round(requests / wall, 2), "tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_max_s": round(max(latencies), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--levels", default="1,4,16")
    args = parser.parse_args()

    import torch
    from fixtures.servers import free_port, running_builtin
    from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

    from mineru_fit.engines.builtin.options import BuiltinOptions

    cuda = torch.cuda.is_available()
    model_dir = build_tiny_qwen2vl(Path(tempfile.mkdtemp(prefix="tiny-qwen2vl-")))
    concurrencies = [int(c) for c in args.levels.split(",")]
    options = BuiltinOptions(
        model=str(model_dir), device="cuda" if cuda else "cpu", dtype="bfloat16" if cuda else "float32",
        port=free_port(), max_model_len=1024, max_new_tokens=args.max_tokens, max_batch_size=max(concurrencies),
        max_image_pixels=256 * 28 * 28,
    )
    with running_builtin(options) as (base, _):
        run_level(base, 2, 2, 2)  # warm-up: first generate call compiles kernels, builds caches
        levels = [run_level(base, c, args.requests, args.max_tokens) for c in concurrencies]
    result = {
        "benchmark": "serve_throughput",
        "model": "tiny random Qwen2-VL (tests/fixtures/tiny_qwen2vl.py): the output is noise",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if cuda else "cpu"},
        "command": f"python benchmarks/serve_throughput.py --requests {args.requests} --max-tokens {args.max_tokens}",
        "levels": levels,
        "speedup_16_vs_1": round(levels[-1]["tokens_per_s"] / levels[0]["tokens_per_s"], 2) if len(levels) > 1 else None,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for level in levels:
        print(f"concurrency {level['concurrency']:3d}: {level['requests_per_s']:7.2f} req/s "
              f"{level['tokens_per_s']:8.1f} tok/s  p50 {level['latency_p50_s']:.3f} s")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
