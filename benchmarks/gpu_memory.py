"""Measured on a real GPU: every level's peak memory beside the planner's prediction.

For each level (none, basic, aggressive, extreme) a fresh process plans the built-in engine
for this GPU, loads MinerU2.5's architecture with random weights (benchmarks/realsize.py, no
download) as the plan says, and runs a fixed workload — layout pages at 1036×1036 and content
crops at the plan's pixel cap, fixed output lengths with EOS ignored — through the engine's own
admission and batcher (EngineState, as its server drives them), while a thread samples the
process's GPU memory through NVML at 50 Hz (benchmarks/gpu_nvml.py). It records the peak per
phase (load, first batch, steady), torch's own peaks, load time, pages/s and tokens/s, and the
planner's terms. --watch-level runs one level under `mineru-fit monitor watch` as well.

The parent writes docs/measurements/<gpu>-<date>.json (GPU, driver, CUDA, torch, date, command),
the calibration of the runtime terms, and prints a short table last.

    python benchmarks/gpu_memory.py                    # everything, on the first CUDA GPU
    python benchmarks/gpu_memory.py --device cpu --model-dir DIR --levels basic   # pipeline check
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_nvml import NvmlPeak  # noqa: E402

MEASUREMENTS = ROOT / "docs" / "measurements"
LEVELS = ("none", "basic", "aggressive", "extreme")
LAYOUT_SIDE = 1036


# ----------------------------------------------------------------------------- the worker

def _image(side_w: int, side_h: int, seed: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)  # noise: the worst case for nothing, the same cost for the model
    return Image.fromarray(rng.integers(0, 255, (side_h, side_w, 3), dtype=np.uint8))


def _crop_side(max_pixels: int) -> int:
    side = int(max_pixels ** 0.5) // 28 * 28
    return max(28, side)


def _rss_bytes() -> Optional[int]:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _rss_peak_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


async def _drive(state: Any, requests: list[tuple[str, Any]], new_tokens: int, batch: int,
                 sampler: NvmlPeak) -> tuple[list[Any], float]:
    """The workload through the engine's own admission and batcher, as its server runs them:
    one full batch first, then the rest queued at once."""
    from mineru_fit.engines.builtin.jobs import SamplingKey

    key = SamplingKey.from_request(temperature=0.0, ignore_eos=True)
    await state.batcher.start()
    try:
        jobs = []
        for prompt, image in requests:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            jobs.append(await state.admit(messages, [image], key, new_tokens))
        start = time.perf_counter()
        sampler.phase = "first_batch"
        outcomes = list(await asyncio.gather(*(state.batcher.submit(j) for j in jobs[:batch])))
        print("FIRST_BATCH_DONE", flush=True)  # `monitor watch --phase-marker` ends its first phase here
        sampler.phase = "steady"
        outcomes += await asyncio.gather(*(state.batcher.submit(j) for j in jobs[batch:]))
        run_s = time.perf_counter() - start
    finally:
        await state.batcher.stop()
    return outcomes, run_s


def _hold(hold_file: Optional[Path], hold_s: float, sampler: NvmlPeak) -> None:
    """Keep the memory held while someone outside takes a snapshot; they touch hold_file when done."""
    if hold_file is None:
        return
    sampler.phase = "hold"
    print(f"HOLDING {os.getpid()}", flush=True)
    deadline = time.monotonic() + hold_s
    while not hold_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def run_worker(level: str, model_dir: str, device: str, pages: int, output_tokens: int,
               hold_file: Optional[Path] = None, hold_s: float = 30.0) -> dict[str, Any]:
    gpu_index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    sampler = NvmlPeak(gpu_index).start()
    import torch

    from mineru_fit.cli.hardware import resolve_hardware
    from mineru_fit.engines.builtin.options import BuiltinOptions
    from mineru_fit.engines.builtin.server import build_state
    from mineru_fit.models import spec_from_dir
    from mineru_fit.planner import PlanRequest, make_report
    from mineru_fit.planner import terms as T
    from mineru_fit.planner.levels import Quant
    from mineru_fit.settings import load_settings

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.init()
        torch.zeros(1, device=device)  # create the context now, to measure it alone
    context_bytes = sampler.now()
    rss_before_load = _rss_bytes()
    spec = spec_from_dir(Path(model_dir))
    hw = resolve_hardware(load_settings(), gpu_index=gpu_index if cuda else None)
    report = make_report(spec, hw, PlanRequest(engine="builtin", level=level, model=model_dir))
    plan = report.plan
    options = BuiltinOptions.from_plan(plan, model_dir, device=device, port=0)

    sampler.phase = "load"
    start = time.perf_counter()
    state = build_state(options)
    load_s = time.perf_counter() - start
    print("LOADED", flush=True)  # `monitor watch --ready-pattern` ends its load phase here
    # The engine's own count of what it holds (quantization state included).
    weights_bytes = getattr(getattr(state.generator, "m", None), "weights_bytes", None)
    allocated_after_load = torch.cuda.memory_allocated(device) if cuda else None
    new_tokens = max(1, min(output_tokens, plan.max_new_tokens))
    crop = _crop_side(plan.max_image_pixels)
    requests = [("\nLayout Detection:", _image(LAYOUT_SIDE, LAYOUT_SIDE, i)) for i in range(pages)]
    requests += [("\nText Recognition:", _image(crop, crop, 1000 + i)) for i in range(pages)]
    outcomes, run_s = asyncio.run(_drive(state, requests, new_tokens, max(1, plan.batch_size), sampler))
    if cuda:
        torch.cuda.synchronize()
    _hold(hold_file, hold_s, sampler)
    sampler.stop()
    failed = [o for o in outcomes if not o.ok]
    generated = sum(o.completion_tokens for o in outcomes if o.ok)
    per_token_kv = T.kv_bytes_per_token(spec, T.DTYPE_BYTES[plan.dtype])
    floor = None
    if level == "extreme":
        one_image = T.vision_activation_bytes(spec, max(1369, plan.max_image_pixels // 784), T.DTYPE_BYTES[plan.dtype])
        floor = {
            "cuda_context_bytes": context_bytes,
            "weights_bytes": weights_bytes,
            "largest_image_activation_bytes": one_image,
            "kv_one_request_bytes": plan.max_model_len * per_token_kv,
        }
        floor["total_bytes"] = sum(v or 0 for v in floor.values())
    return {
        "level": level,
        "pid": os.getpid(),
        "torch_cuda": torch.version.cuda,
        "plan": plan.model_dump(),
        "predicted_peak_bytes": plan.predicted_peak_bytes,
        "predicted_weights_bytes": T.weights_bytes(spec, plan.dtype, Quant(plan.weight_format), quantize_vision=True),
        "measured": {
            **sampler.result(),
            "cuda_context_bytes": context_bytes,
            "weights_bytes": weights_bytes,
            "allocated_after_load_bytes": allocated_after_load,
            "torch_max_allocated_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
            "torch_max_reserved_bytes": torch.cuda.max_memory_reserved(device) if cuda else None,
            "rss_before_load_bytes": rss_before_load,
            "rss_peak_bytes": _rss_peak_bytes(),
            "load_s": round(load_s, 2),
            "pages": pages,
            "requests": len(outcomes),
            "pages_per_s": round(pages / run_s, 3) if run_s and not failed else None,
            "tokens_per_s": round(generated / run_s, 1) if run_s and not failed else None,
            "output_tokens_per_request": new_tokens,
            "crop_side_px": crop,
            "oom": f"{len(failed)} of {len(outcomes)} requests failed: {failed[0].error_message}" if failed else None,
            "oom_events": _oom_events(state),
        },
        "floor": floor,
    }


def _oom_events(state: Any) -> dict[str, float]:
    """The engine's out-of-memory counters (split / shrink / rejected) from its metrics."""
    events: dict[str, float] = {}
    for family in state.metrics.registry.collect():
        for sample in family.samples:
            if sample.name.startswith("mineru_fit_oom_events") and "action" in sample.labels:
                events[sample.labels["action"]] = sample.value
    return events


# ----------------------------------------------------------------------------- the parent

def gpu_facts(device: str) -> dict[str, Any]:
    """The machine a record was measured on: GPU, driver, torch (torch's CUDA comes from the workers).
    Torch is not imported here: seconds a CPU rehearsal does not spend, and no CUDA context."""
    from mineru_fit.devices import read_inventory

    facts: dict[str, Any] = {"device": device, "python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "transformers", "bitsandbytes"):
        try:
            facts[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            facts[package] = None
    inventory = read_inventory("cuda:0" if device.startswith("cuda") else "cpu")
    if inventory.gpus:
        gpu = inventory.gpus[0]
        facts.update(gpu=gpu.name, gpu_total_bytes=gpu.memory.total_bytes, driver=inventory.driver_version,
                     cuda_driver=inventory.cuda_driver_version,
                     compute_capability=list(gpu.compute_capability or ()))
    else:
        facts.update(gpu=None, reason=inventory.reason)
    return facts


def measured_peak(result: dict[str, Any], allow_rss: bool = False) -> Optional[int]:
    """NVML's peak for the level; a CPU rehearsal may stand in its resident-set peak."""
    measured = result.get("measured") or {}
    if measured.get("nvml_peak_bytes"):
        return measured["nvml_peak_bytes"]
    return measured.get("rss_peak_bytes") if allow_rss else None


def summarize(results: list[dict[str, Any]], allow_rss: bool = False,
              context_bytes: Optional[int] = None) -> list[dict[str, Any]]:
    """Per level: predicted vs measured peak, the error, and the floor check. With this GPU's
    measured CUDA context, also the prediction the planner makes once that is calibrated: the
    runtime term (the context estimate it used) swapped for the measured one."""
    rows = []
    for r in results:
        measured = measured_peak(r, allow_rss)
        predicted = r.get("predicted_peak_bytes")
        row: dict[str, Any] = {"level": r["level"], "predicted_bytes": predicted, "measured_bytes": measured,
                               "error_pct": None, "under_predicted": None, "error": r.get("error")}
        if measured and predicted:
            row["error_pct"] = round(100 * (predicted - measured) / measured, 2)
            row["under_predicted"] = predicted < measured
            runtime = ((r.get("plan") or {}).get("terms") or {}).get("runtime")
            if context_bytes and runtime is not None:
                calibrated = predicted - runtime + context_bytes
                row["predicted_calibrated_bytes"] = calibrated
                row["error_calibrated_pct"] = round(100 * (calibrated - measured) / measured, 2)
        floor = r.get("floor")
        if floor and measured:
            row["floor_bytes"] = floor["total_bytes"]
            row["peak_over_floor"] = round(measured / floor["total_bytes"], 3)
        rows.append(row)
    return rows


def calibrate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The runtime terms a GPU class needs: the CUDA context as measured, and the margin that
    makes no level under-predict by more than 3% (recorded, not applied silently)."""
    contexts = [r["measured"]["cuda_context_bytes"] for r in results
                if r.get("measured") and r["measured"].get("cuda_context_bytes")]
    return {"cuda_context_bytes": max(contexts) if contexts else None}


CALIBRATION = ROOT / "src" / "mineru_fit" / "planner" / "data" / "calibration.json"
_GPU_CLASS = re.compile(r"\b(H200|H100|H20|A100|A10G?|A30|L40S|L40|L4|T4|V100|RTX \w*\s?\d{4}\w*|RTX A\d{4})\b", re.I)


def gpu_class(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100': the part of the name that says which chip it is."""
    match = _GPU_CLASS.search(name)
    return match.group(1).upper() if match else name


def write_calibration(gpu_name: str, context_bytes: int, source: Path, path: Path = CALIBRATION,
                      root: Path = ROOT) -> None:
    """Record (or replace) this GPU class's measured CUDA context, naming the measurement file."""
    data = json.loads(path.read_text())
    cls = gpu_class(gpu_name)
    entries = [e for e in data["gpu_classes"] if e["gpu_class"] != cls]
    entries.append({"gpu_class": cls, "name_contains": cls, "cuda_context_bytes": int(context_bytes),
                    "source": str(source.relative_to(root)) if source.is_relative_to(root) else str(source)})
    data["gpu_classes"] = sorted(entries, key=lambda e: e["gpu_class"])
    path.write_text(json.dumps(data, indent=2) + "\n")


def worker_command(level: str, model_dir: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, __file__, "--worker", level, "--model-dir", str(model_dir), "--device", args.device,
            "--pages", str(args.pages), "--output-tokens", str(args.output_tokens)]


def run_level(level: str, cmd: list[str], timeout_s: float, watch_dir: Optional[Path] = None,
              gpu_index: Optional[int] = 0) -> dict[str, Any]:
    """One level in a fresh process; under `mineru-fit monitor watch` when watch_dir is given."""
    monitor = None
    if watch_dir is not None:
        from gpu_watch import run_watched

        code, stdout, stderr, monitor = run_watched(cmd, watch_dir, gpu_index=gpu_index, timeout_s=timeout_s)
    else:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            code, stdout, stderr = None, "", ""
    if code is None:
        return {"level": level, "error": f"timed out after {timeout_s:g} s", "monitor": monitor}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if code != 0 or not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return {"level": level, "error": f"worker exited {code}: {tail}", "monitor": monitor}
    result = json.loads(lines[-1][len("RESULT "):])
    if monitor is not None:
        result["monitor"] = monitor
    return result


def print_table(summary: list[dict[str, Any]]) -> None:
    print(f"\n{'level':<11}{'predicted':>12}{'measured':>12}{'error':>9}  notes")
    for row in summary:
        p = f"{row['predicted_bytes'] / 2**30:.2f} GiB" if row["predicted_bytes"] else "—"
        m = f"{row['measured_bytes'] / 2**30:.2f} GiB" if row["measured_bytes"] else "—"
        e = f"{row['error_pct']:+.1f}%" if row["error_pct"] is not None else "—"
        notes = row["error"] or ""
        if "peak_over_floor" in row:
            notes += f"peak/floor {row['peak_over_floor']:.2f}"
        print(f"{row['level']:<11}{p:>12}{m:>12}{e:>9}  {notes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model-dir", type=Path, help="a model folder; default: build MinerU2.5 with random weights")
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=MEASUREMENTS)
    parser.add_argument("--timeout-s", type=float, default=240, help="per level")
    parser.add_argument("--budget-s", type=float, help="all levels: those that no longer fit are skipped")
    parser.add_argument("--watch-level", help="run this level under `mineru-fit monitor watch` (and take a "
                                              "`monitor --once --json` snapshot while it holds its memory)")
    parser.add_argument("--no-calibrate", action="store_true", help="write the record only, not calibration.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a level: run one worker and print JSON
    parser.add_argument("--hold-file", type=Path, help=argparse.SUPPRESS)  # worker: wait for it after the workload
    args = parser.parse_args()

    if args.worker:
        print("RESULT " + json.dumps(run_worker(args.worker, str(args.model_dir), args.device, args.pages,
                                                args.output_tokens, hold_file=args.hold_file)), flush=True)
        return

    started = time.perf_counter()
    facts = gpu_facts(args.device)
    model_dir = args.model_dir
    build_s = None
    if model_dir is None:
        from realsize import build_realsize

        t0 = time.perf_counter()
        model_dir = build_realsize(Path(tempfile.mkdtemp(prefix="mineru25-random-")), device=args.device)
        build_s = round(time.perf_counter() - t0, 1)
    gpu_index = None if not args.device.startswith("cuda") else int(args.device.partition(":")[2] or 0)
    deadline = time.monotonic() + args.budget_s if args.budget_s else None
    results = []
    for level in args.levels.split(","):
        timeout_s = args.timeout_s if deadline is None else min(args.timeout_s, deadline - time.monotonic())
        if timeout_s < 5:
            results.append({"level": level, "error": "skipped: the time box ran out"})
            continue
        watch_dir = Path(tempfile.mkdtemp(prefix=f"watch-{level}-")) if level == args.watch_level else None
        results.append(run_level(level, worker_command(level, model_dir, args), timeout_s, watch_dir, gpu_index))
    facts["torch_cuda"] = next((r["torch_cuda"] for r in results if "torch_cuda" in r), None)
    date = datetime.now(timezone.utc)
    record = {
        "benchmark": "gpu_memory",
        "date": date.isoformat(timespec="seconds"),
        "command": "python " + " ".join([str(Path(__file__).relative_to(ROOT))] + sys.argv[1:]),
        "machine": facts,
        "model": "MinerU2.5-2509-1.2B architecture, random bf16 weights (benchmarks/realsize.py)"
                 if args.model_dir is None else str(args.model_dir),
        "workload": {"layout_pages": args.pages, "content_crops": args.pages, "output_tokens": args.output_tokens,
                     "eos": "ignored", "driven_through": "EngineState.admit + its batcher, as the server does"},
        "build_model_s": build_s,
        "levels": results,
        "summary": summarize(results, context_bytes=calibrate(results)["cuda_context_bytes"]),
        "calibration": calibrate(results),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    slug = (facts.get("gpu") or args.device).lower().replace(" ", "-")
    path = args.out / f"{slug}-{date:%Y-%m-%d}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    context = record["calibration"]["cuda_context_bytes"]
    if facts.get("gpu") and context and not args.no_calibrate:
        write_calibration(facts["gpu"], context, path)
        print(f"calibrated {gpu_class(facts['gpu'])}: CUDA context {context / 2**20:.0f} MiB -> {CALIBRATION.name}")
    print_table(record["summary"])
    print(f"written to {path} in {record['wall_s']} s")


if __name__ == "__main__":
    main()
