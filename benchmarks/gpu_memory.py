"""Measured on a real GPU: every level's peak memory beside the planner's prediction.

For each level (none, basic, aggressive, extreme) a fresh process plans the built-in engine
for this GPU, loads MinerU2.5's architecture with random weights (benchmarks/realsize.py, no
download) as the plan says, and runs a fixed workload — layout pages at 1036×1036 and content
crops at the plan's pixel cap, fixed output lengths with EOS ignored — while a thread samples
the process's GPU memory through NVML at 50 Hz. It records the peak per phase (load, first
batch, steady), torch's own peaks, load time, pages/s and tokens/s, and the planner's terms.

The parent writes docs/measurements/<gpu>-<date>.json (GPU, driver, torch, date, command),
the calibration of the runtime terms, and prints a short table last.

    python benchmarks/gpu_memory.py                    # everything, on the first CUDA GPU
    python benchmarks/gpu_memory.py --device cpu --model-dir DIR --levels basic   # pipeline check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
MEASUREMENTS = ROOT / "docs" / "measurements"
LEVELS = ("none", "basic", "aggressive", "extreme")
LAYOUT_SIDE = 1036


# ----------------------------------------------------------------------------- the worker

class NvmlPeak:
    """Samples this process's GPU memory (NVML) in a thread; peaks per named phase."""

    def __init__(self, gpu_index: int = 0, interval_s: float = 0.02) -> None:
        self.gpu_index = gpu_index
        self.interval_s = interval_s
        self.phase = "start"
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self.reason: Optional[str] = None
        self._stop = threading.Event()
        self._read = self._reader()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _reader(self):  # noqa: ANN202
        try:
            import pynvml

            pynvml.nvmlInit()
            # NVML numbers GPUs as nvidia-smi does; with CUDA_VISIBLE_DEVICES set, pass the NVML index.
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
        except Exception as exc:  # no driver, no GPU: the worker still runs, without samples
            self.reason = f"NVML unavailable: {exc}"
            return None
        pid = os.getpid()

        def read() -> Optional[int]:
            for fn in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
                       "nvmlDeviceGetComputeRunningProcesses"):
                if hasattr(pynvml, fn):
                    try:
                        for proc in getattr(pynvml, fn)(handle):
                            if proc.pid == pid and proc.usedGpuMemory is not None:
                                return int(proc.usedGpuMemory)
                        return None
                    except pynvml.NVMLError:
                        continue
            return None

        return read

    def start(self) -> "NvmlPeak":
        if self._read is not None:
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples += 1
                self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), value)
            time.sleep(self.interval_s)

    def now(self) -> Optional[int]:
        return self._read() if self._read is not None else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


def _image(side_w: int, side_h: int, seed: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)  # noise: the worst case for nothing, the same cost for the model
    return Image.fromarray(rng.integers(0, 255, (side_h, side_w, 3), dtype=np.uint8))


def _crop_side(max_pixels: int) -> int:
    side = int(max_pixels ** 0.5) // 28 * 28
    return max(28, side)


def run_worker(level: str, model_dir: str, device: str, pages: int, output_tokens: int) -> dict[str, Any]:
    gpu_index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    sampler = NvmlPeak(gpu_index).start()
    import torch

    from mineru_fit.cli.hardware import resolve_hardware
    from mineru_fit.engines.builtin.jobs import Job, SamplingKey
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
    spec = spec_from_dir(Path(model_dir))
    hw = resolve_hardware(load_settings(), gpu_index=gpu_index if cuda else None)
    report = make_report(spec, hw, PlanRequest(engine="builtin", level=level, model=model_dir))
    plan = report.plan
    options = BuiltinOptions.from_plan(plan, model_dir, device=device, port=0)

    sampler.phase = "load"
    start = time.perf_counter()
    state = build_state(options)
    load_s = time.perf_counter() - start
    generator = state.generator
    weights_bytes = generator.m.weights_bytes
    key = SamplingKey(0.0, 1.0, None, 1.0, 0.0, 0.0, 0, (), False, ignore_eos=True)
    new_tokens = max(1, min(output_tokens, plan.max_new_tokens))
    crop = _crop_side(plan.max_image_pixels)

    def job(prompt: str, image: Any) -> Job:
        j = Job([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
                [image], key, new_tokens, new_tokens)
        generator.encode(j)
        return j

    layout = [job("\nLayout Detection:", _image(LAYOUT_SIDE, LAYOUT_SIDE, i)) for i in range(pages)]
    content = [job("\nText Recognition:", _image(crop, crop, 1000 + i)) for i in range(pages)]
    batches = [layout[i:i + plan.batch_size] for i in range(0, pages, plan.batch_size)]
    batches += [content[i:i + plan.batch_size] for i in range(0, pages, plan.batch_size)]
    generated, oom, timings = 0, None, []
    run_start = time.perf_counter()
    for i, batch in enumerate(batches):
        sampler.phase = "first_batch" if i == 0 else "steady"
        t0 = time.perf_counter()
        try:
            outcomes = generator.run(batch)
        except torch.OutOfMemoryError as exc:
            oom = f"batch {i} of {len(batch)}: {exc}"
            break
        timings.append(time.perf_counter() - t0)
        generated += sum(o.completion_tokens for o in outcomes)
    run_s = time.perf_counter() - run_start
    if cuda:
        torch.cuda.synchronize()
    sampler.stop()
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
        "plan": plan.model_dump(),
        "predicted_peak_bytes": plan.predicted_peak_bytes,
        "predicted_weights_bytes": T.weights_bytes(spec, plan.dtype, Quant(plan.weight_format), quantize_vision=True),
        "measured": {
            "nvml_peak_bytes": max(sampler.peaks.values()) if sampler.peaks else None,
            "nvml_peak_by_phase": sampler.peaks,
            "nvml_samples": sampler.samples,
            "nvml_reason": sampler.reason,
            "cuda_context_bytes": context_bytes,
            "weights_bytes": weights_bytes,
            "torch_max_allocated_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
            "torch_max_reserved_bytes": torch.cuda.max_memory_reserved(device) if cuda else None,
            "load_s": round(load_s, 2),
            "pages": pages,
            "pages_per_s": round(pages / run_s, 3) if run_s and not oom else None,
            "tokens_per_s": round(generated / run_s, 1) if run_s and not oom else None,
            "output_tokens_per_request": new_tokens,
            "crop_side_px": crop,
            "oom": oom,
        },
        "floor": floor,
    }


# ----------------------------------------------------------------------------- the parent

def _gpu_facts(device: str) -> dict[str, Any]:
    import torch

    from mineru_fit.devices import read_inventory

    facts: dict[str, Any] = {"torch": torch.__version__, "device": device, "python": platform.python_version()}
    try:
        import transformers

        facts["transformers"] = transformers.__version__
    except ImportError:
        pass
    inventory = read_inventory("cuda:0" if device.startswith("cuda") else "cpu")
    if inventory.gpus:
        gpu = inventory.gpus[0]
        facts.update(gpu=gpu.name, gpu_total_bytes=gpu.memory.total_bytes, driver=inventory.driver_version,
                     cuda_driver=inventory.cuda_driver_version,
                     compute_capability=list(gpu.compute_capability or ()))
    else:
        facts.update(gpu=None, reason=inventory.reason)
    return facts


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level: predicted vs measured peak, the error, and the floor check."""
    rows = []
    for r in results:
        measured = (r.get("measured") or {}).get("nvml_peak_bytes")
        predicted = r.get("predicted_peak_bytes")
        row: dict[str, Any] = {"level": r["level"], "predicted_bytes": predicted, "measured_bytes": measured,
                               "error_pct": None, "under_predicted": None, "error": r.get("error")}
        if measured and predicted:
            row["error_pct"] = round(100 * (predicted - measured) / measured, 2)
            row["under_predicted"] = predicted < measured
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


def write_calibration(gpu_name: str, context_bytes: int, source: Path, path: Path = CALIBRATION) -> None:
    """Record (or replace) this GPU class's measured CUDA context, naming the measurement file."""
    data = json.loads(path.read_text())
    cls = gpu_class(gpu_name)
    entries = [e for e in data["gpu_classes"] if e["gpu_class"] != cls]
    entries.append({"gpu_class": cls, "name_contains": cls, "cuda_context_bytes": int(context_bytes),
                    "source": str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(source)})
    data["gpu_classes"] = sorted(entries, key=lambda e: e["gpu_class"])
    path.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model-dir", type=Path, help="a model folder; default: build MinerU2.5 with random weights")
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=MEASUREMENTS)
    parser.add_argument("--timeout-s", type=int, default=240, help="per level")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a level: run one worker and print JSON
    args = parser.parse_args()

    if args.worker:
        print("RESULT " + json.dumps(run_worker(args.worker, str(args.model_dir), args.device, args.pages,
                                                args.output_tokens)), flush=True)
        return

    started = time.perf_counter()
    facts = _gpu_facts(args.device)
    model_dir = args.model_dir
    build_s = None
    if model_dir is None:
        from realsize import build_realsize

        t0 = time.perf_counter()
        model_dir = build_realsize(Path(tempfile.mkdtemp(prefix="mineru25-random-")), device=args.device)
        build_s = round(time.perf_counter() - t0, 1)
    results = []
    for level in args.levels.split(","):
        cmd = [sys.executable, __file__, "--worker", level, "--model-dir", str(model_dir), "--device", args.device,
               "--pages", str(args.pages), "--output-tokens", str(args.output_tokens)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
        except subprocess.TimeoutExpired:
            results.append({"level": level, "error": f"timed out after {args.timeout_s} s"})
            continue
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            results.append({"level": level, "error": f"worker exited {done.returncode}: {tail}"})
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
    date = datetime.now(timezone.utc)
    record = {
        "benchmark": "gpu_memory",
        "date": date.isoformat(timespec="seconds"),
        "command": "python " + " ".join([str(Path(__file__).relative_to(ROOT))] + sys.argv[1:]),
        "machine": facts,
        "model": "MinerU2.5-2509-1.2B architecture, random bf16 weights (benchmarks/realsize.py)"
                 if args.model_dir is None else str(args.model_dir),
        "workload": {"layout_pages": args.pages, "content_crops": args.pages, "output_tokens": args.output_tokens,
                     "eos": "ignored"},
        "build_model_s": build_s,
        "levels": results,
        "summary": summarize(results),
        "calibration": calibrate(results),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    slug = (facts.get("gpu") or args.device).lower().replace(" ", "-")
    path = args.out / f"{slug}-{date:%Y-%m-%d}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    context = record["calibration"]["cuda_context_bytes"]
    if facts.get("gpu") and context:
        write_calibration(facts["gpu"], context, path)
        print(f"calibrated {gpu_class(facts['gpu'])}: CUDA context {context / 2**20:.0f} MiB -> {CALIBRATION.name}")
    print(f"\n{'level':<11}{'predicted':>12}{'measured':>12}{'error':>9}  notes")
    for row in record["summary"]:
        p = f"{row['predicted_bytes'] / 2**30:.2f} GiB" if row["predicted_bytes"] else "—"
        m = f"{row['measured_bytes'] / 2**30:.2f} GiB" if row["measured_bytes"] else "—"
        e = f"{row['error_pct']:+.1f}%" if row["error_pct"] is not None else "—"
        notes = row["error"] or ""
        if "peak_over_floor" in row:
            notes += f"peak/floor {row['peak_over_floor']:.2f}"
        print(f"{row['level']:<11}{p:>12}{m:>12}{e:>9}  {notes}")
    print(f"written to {path} in {record['wall_s']} s")


if __name__ == "__main__":
    main()
