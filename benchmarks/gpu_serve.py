"""The built-in engine through its own server (`mineru-fit serve --engine builtin`), at real size.

Throughput: requests/s and tokens/s at concurrency 1, 8 and 32 on a MinerU-shaped mix (layout
pages at 1036×1036, text and table crops; fixed output lengths, EOS ignored).

Out of memory, for real: a second server whose allocator cap (--mem-fraction-static) sits below
what its batches need. A burst of images from full size down to a tenth must come back with
every request answered — the engine splits batches, retries single requests with smaller
images, answers 503 where even that does not fit — and the server then serves normally again.

    python benchmarks/gpu_serve.py --model-dir DIR --out FILE [--dry] [--budget-s 150]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_procs import cli, kill_tree  # noqa: E402

LAYOUT_SIDE = 1036
# Shares of the engine's pixel cap: the first fail and shrink in vain (503), the middle ones
# shrink and fit, the small ones fit; sent together they also make batches that split.
OOM_LADDER = (1.0, 1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.125, 0.09, 0.09, 0.06, 0.06, 0.04, 0.04, 0.03, 0.03)
# The cap leaves room for one request's KV plus this share of one full-size request's activations.
OOM_ACTIVATION_SHARE = 0.3
# The capped server's start plus the burst and recovery on one H200 (an estimate).
OOM_MIN_S = 45.0


# ----------------------------------------------------------------------------- requests

def page_image(width: int, height: int, seed: int) -> str:
    """A document-like image (white, lines of text) as a PNG data URL: small on the wire."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i, y in enumerate(range(8, height - 12, 18)):
        draw.text((8, y), f"MinerU page {seed} line {i} " * max(1, width // 160), fill="black")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def body(url: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": prompt}]}],
            "temperature": 0, "max_tokens": max_tokens, "ignore_eos": True, "skip_special_tokens": False}


def mixed_workload(n: int, max_tokens: int, crop_scale: float = 1.0) -> list[dict[str, Any]]:
    """Every fourth request a layout page, the rest text lines and tables of a few sizes."""
    shapes = [(LAYOUT_SIDE, LAYOUT_SIDE, "\nLayout Detection:"), (1000, 120, "\nText Recognition:"),
              (900, 500, "\nTable Recognition:"), (700, 90, "\nText Recognition:")]
    out = []
    for i in range(n):
        w, h, prompt = shapes[i % 4]
        out.append(body(page_image(max(28, int(w * crop_scale)), max(28, int(h * crop_scale)), i), prompt, max_tokens))
    return out


def loopback() -> Any:
    """An HTTP client for the server on this machine: never through a proxy from the environment."""
    import httpx

    return httpx.Client(trust_env=False)


def send_all(base: str, bodies: list[dict[str, Any]], concurrency: int, timeout_s: float = 600) -> dict[str, Any]:
    """Send every body with `concurrency` in flight; what came back, and how fast."""
    import httpx

    client = loopback()
    results: list[dict[str, Any]] = []

    def one(payload: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            reply = client.post(f"{base}/v1/chat/completions", json=payload, timeout=timeout_s)
        except httpx.HTTPError as exc:
            return {"status": None, "error": f"{type(exc).__name__}: {exc}", "s": time.perf_counter() - start}
        out: dict[str, Any] = {"status": reply.status_code, "s": time.perf_counter() - start}
        if reply.status_code == 200:
            out["tokens"] = reply.json()["usage"]["completion_tokens"]
        else:
            out["error"] = reply.text[:300]
        return out

    start = time.perf_counter()
    with client, ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - start
    ok = [r for r in results if r["status"] == 200]
    tokens = sum(r.get("tokens", 0) for r in ok)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    return {
        "concurrency": concurrency, "requests": len(bodies), "answered": sum(r["status"] is not None for r in results),
        "statuses": statuses, "wall_s": round(wall, 3), "requests_per_s": round(len(ok) / wall, 3) if wall else None,
        "tokens_per_s": round(tokens / wall, 1) if wall else None,
        "latency_p50_s": round(statistics.median(r["s"] for r in results), 3) if results else None,
        "latency_max_s": round(max(r["s"] for r in results), 3) if results else None,
        "errors": sorted({r["error"][:160] for r in results if r.get("error")})[:5],
    }


# ----------------------------------------------------------------------------- the server

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mineru-fit serve --engine builtin ...` as a child in its own session; stopped with SIGINT."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.command = ["mineru-fit", "serve", "--engine", "builtin", *args, "--port", str(self.port)]
        self.log = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(cli(*self.command[1:]), stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.started = time.perf_counter()

    def wait_healthy(self, timeout_s: float) -> float:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.tail()}")
            try:
                with loopback() as client:
                    if client.get(f"{self.base}/health", timeout=2).status_code == 200:
                        return round(time.perf_counter() - self.started, 2)
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"no /health within {timeout_s:g} s: {self.tail()}")

    def metrics(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        with loopback() as client:
            text = client.get(f"{self.base}/metrics", timeout=10).text
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("level", "model"))
                values[f"{s.name}{{{label}}}" if label else s.name] = s.value
        return values

    def healthy(self) -> bool:
        import httpx

        try:
            with loopback() as client:
                return client.get(f"{self.base}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, lines: int = 5) -> str:
        self._log.flush()
        return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's own shutdown: the batcher answers what is queued
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# ----------------------------------------------------------------------------- the steps

def left(deadline: float) -> float:
    """Seconds to the step's deadline, as a request timeout (a few at least)."""
    return max(5.0, deadline - time.monotonic())


def throughput(server: Server, concurrencies: list[int], max_tokens: int, crop_scale: float,
               deadline: float, min_requests: int = 8) -> list[dict[str, Any]]:
    send_all(server.base, mixed_workload(2, 2, crop_scale), 2, left(deadline))  # warm-up: kernels, allocator
    rows = []
    for c in concurrencies:
        if time.monotonic() > deadline:
            rows.append({"concurrency": c, "skipped": "time box reached"})
            continue
        bodies = mixed_workload(max(min_requests, 2 * c), max_tokens, crop_scale)
        rows.append(send_all(server.base, bodies, c, left(deadline)))
    return rows


def oom_cap(spec: Any, plan: Any, total_bytes: int, measured_activation: Optional[int]) -> dict[str, Any]:
    """The allocator cap for the OOM step: weights + one request's KV + a share of one full-size
    request's activations — measured at this level when the memory table ran, else the planner's."""
    from mineru_fit.planner import terms as T

    kv_one = plan.max_model_len * T.kv_bytes_per_token(spec, T.DTYPE_BYTES[plan.dtype])
    activation = measured_activation or plan.terms["activations"] // max(1, plan.batch_size)
    cap = plan.terms["weights"] + kv_one + int(OOM_ACTIVATION_SHARE * activation)
    return {"cap_bytes": cap, "fraction": round(cap / total_bytes, 6), "weights_bytes": plan.terms["weights"],
            "kv_one_request_bytes": kv_one, "activation_one_request_bytes": activation,
            "activation_from": "measured" if measured_activation else "planner", "share": OOM_ACTIVATION_SHARE}


def oom_path(server: Server, max_pixels: int, max_tokens: int, deadline: float) -> dict[str, Any]:
    """The ladder in one burst, then ordinary requests: who got what, and the engine's counters.
    A request still unanswered at the deadline counts as unanswered (status None)."""
    before = server.metrics()
    warm = send_all(server.base, mixed_workload(1, 2, 0.2), 1, left(deadline))
    ladder = []
    for i, share in enumerate(OOM_LADDER):
        side = max(28, int((share * max_pixels) ** 0.5))
        ladder.append(body(page_image(side, side, 100 + i), "\nText Recognition:", max_tokens))
    burst = send_all(server.base, ladder, len(ladder), left(deadline))
    after_burst = server.metrics()
    recovery = send_all(server.base, mixed_workload(8, max_tokens, 0.3), 8, left(deadline))
    after = server.metrics()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    return {
        "ladder_pixel_shares": list(OOM_LADDER), "warm_up": warm, "burst": burst, "recovery": recovery,
        "oom_events": {a: delta(f"mineru_fit_oom_events_total{{action={a}}}") for a in ("split", "shrink", "rejected")},
        "batch_cap_after_burst": after_burst.get("mineru_fit_batch_cap"),
        "healthy_after": server.healthy(),
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--level", default="basic")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--crop-scale", type=float, default=1.0, help="shrink every image (the tiny CPU rehearsal)")
    parser.add_argument("--measurement", type=Path, help="the memory table's record: sizes the OOM cap from it")
    parser.add_argument("--budget-s", type=float, default=150)
    parser.add_argument("--dry", action="store_true", help="CPU rehearsal: one server, no allocator cap")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget_s
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    logs = args.out.parent
    result: dict[str, Any] = {"level": args.level, "max_tokens": args.max_tokens, "workload": (
        "every 4th request a 1036×1036 layout page, the rest text lines (1000×120, 700×90) and tables (900×500); "
        "EOS ignored, fixed output length")}
    server = Server(["--level", args.level, "--model", str(args.model_dir), "--concurrency", str(max(concurrencies))],
                    logs / "serve-throughput.log")
    save = lambda: args.out.write_text(json.dumps(result, indent=2) + "\n")  # noqa: E731 (after each phase)
    try:
        result["throughput_server"] = {"command": server.command, "ready_s": server.wait_healthy(left(deadline))}
        result["throughput"] = throughput(server, concurrencies, args.max_tokens, args.crop_scale, deadline,
                                          min_requests=2 if args.dry else 8)
        save()
        if args.dry:  # no allocator cap on the CPU: the same server takes the OOM burst
            result["oom"] = {"cap": None, "note": "CPU rehearsal: no allocator cap, so nothing runs out of memory",
                             "server": result["throughput_server"],
                             **oom_path(server, int((LAYOUT_SIDE * args.crop_scale) ** 2), 2, deadline)}
    finally:
        server.stop()
    if not args.dry:
        result["oom"] = run_oom(args, deadline)
    save()
    for row in result["throughput"]:
        if "skipped" in row:
            print(f"concurrency {row['concurrency']:3d}: skipped ({row['skipped']})")
        else:
            print(f"concurrency {row['concurrency']:3d}: {row['requests_per_s']} req/s {row['tokens_per_s']} tok/s "
                  f"statuses {row['statuses']}")
    return 0


def run_oom(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """A server at the same level with its cap below the need, then the burst."""
    from mineru_fit.cli.hardware import resolve_hardware
    from mineru_fit.models import spec_from_dir
    from mineru_fit.planner import PlanRequest, make_report
    from mineru_fit.settings import load_settings

    if deadline - time.monotonic() < OOM_MIN_S:
        return {"skipped": f"time box reached (under {OOM_MIN_S:g} s left for a server start and the burst)"}
    spec = spec_from_dir(args.model_dir)
    hw = resolve_hardware(load_settings(), gpu_index=0)
    plan = make_report(spec, hw, PlanRequest(engine="builtin", level=args.level, concurrency=8)).plan
    cap = oom_cap(spec, plan, hw.total_bytes, measured_activation_bytes(args.measurement, args.level, spec))
    # --max-batch-size: under a cap this small the planner would shrink the batch to 1; keep 8 so
    # that batches form (and split).
    server = Server(["--level", args.level, "--model", str(args.model_dir), "--concurrency", "8",
                     "--max-batch-size", "8", "--mem-fraction-static", f"{cap['fraction']:.6f}"],
                    args.out.parent / "serve-oom.log")
    try:
        ready = server.wait_healthy(left(deadline))
        return {"cap": cap, "server": {"command": server.command, "ready_s": ready},
                **oom_path(server, plan.max_image_pixels, 16, deadline)}
    except RuntimeError as exc:
        return {"cap": cap, "error": str(exc)}
    finally:
        server.stop()


def measured_activation_bytes(record_path: Optional[Path], level: str, spec: Any) -> Optional[int]:
    """One full-size request's activations at `level`, from the memory table: the allocator's
    peak above the weights, less the batch's KV, per request in the batch."""
    from mineru_fit.planner import terms as T

    if record_path is None or not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    for result in record.get("levels", []):
        m, plan = result.get("measured") or {}, result.get("plan") or {}
        if result.get("level") != level or not m.get("torch_max_reserved_bytes") or not m.get("allocated_after_load_bytes"):
            continue
        batch = max(1, plan["batch_size"])
        kv = batch * plan["max_model_len"] * T.kv_bytes_per_token(spec, T.DTYPE_BYTES[plan["dtype"]])
        dynamic = m["torch_max_reserved_bytes"] - m["allocated_after_load_bytes"] - kv
        return max(1, dynamic // batch)
    return None


if __name__ == "__main__":
    sys.exit(main())
