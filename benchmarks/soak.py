"""Soak: 1,000 flash jobs through `mineru-fit api`, with the service's memory sampled every 100 jobs.

Starts the real service (a subprocess on a loopback port, its own data dir), keeps `--concurrency` jobs in
flight through POST /file_parse with a 1-page PDF made offline, and after every 100 finished jobs reads the
RSS of the service process and of its worker processes from /proc. Writes
benchmarks/results/soak.json: machine, date, command, each sample, and the service's RSS growth per 100
jobs (over all samples, and after the first 100 — start-up caches warm then). Linux only (/proc).

    .venv/bin/python benchmarks/soak.py [--jobs 1000] [--workers 2] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).parent / "results" / "soak.json"
CLI = str(Path(sys.executable).parent / "mineru-fit")
SAMPLE_EVERY = 100


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_page_pdf(path: Path) -> bytes:
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), invariant=1)
    c.setFont("Helvetica-Bold", 16)
    c.drawString(72, 760, "Soak test page")
    c.setFont("Helvetica", 11)
    for row in range(20):
        c.drawString(72, 720 - 16 * row, f"Line {row + 1} of body text that the flash tier turns into Markdown.")
    c.showPage()
    c.save()
    return path.read_bytes()


async def soak(base: str, pdf: bytes, jobs: int, concurrency: int, pid: int) -> tuple[list[dict[str, Any]], int]:
    samples: list[dict[str, Any]] = []
    done = failed = 0
    started = time.monotonic()
    todo = iter(range(jobs))
    lock = asyncio.Lock()

    def sample() -> None:
        workers = children(pid)
        samples.append({"jobs": done, "seconds": round(time.monotonic() - started, 1),
                        "service_rss_bytes": rss_bytes(pid),
                        "workers_rss_bytes": sum(rss_bytes(w) for w in workers if Path(f"/proc/{w}").exists()),
                        "workers": len(workers)})
        print(f"{done:5d} jobs  {samples[-1]['seconds']:7.1f} s  service RSS "
              f"{samples[-1]['service_rss_bytes'] / 2**20:6.1f} MiB  workers {samples[-1]['workers_rss_bytes'] / 2**20:6.1f} MiB",
              flush=True)

    async def client(api: httpx.AsyncClient) -> None:
        nonlocal done, failed
        for n in todo:
            response = await api.post("/file_parse", files=[("files", (f"soak{n}.pdf", pdf, "application/pdf"))])
            ok = response.status_code == 200 and response.json()["status"] == "succeeded"
            async with lock:
                done += 1
                failed += 0 if ok else 1
                if done % SAMPLE_EVERY == 0:
                    sample()

    sample()
    async with httpx.AsyncClient(base_url=base, timeout=300) as api:
        await asyncio.gather(*(client(api) for _ in range(concurrency)))
    return samples, failed


def growth_per_100(samples: list[dict[str, Any]], key: str, skip_jobs: int = 0) -> float:
    """Least-squares slope of RSS against jobs, in bytes per 100 jobs."""
    points = [(s["jobs"], s[key]) for s in samples if s["jobs"] >= skip_jobs]
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return 100 * sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mineru-fit-soak-") as tmp:
        pdf = one_page_pdf(Path(tmp) / "page.pdf")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU_", "CUDA_"))}
        env["MINERU_FIT_CONFIG"] = str(Path(tmp) / "none.toml")
        log = open(Path(tmp) / "api.log", "w")
        service = subprocess.Popen([CLI, "api", "--port", str(port), "--data-dir", str(Path(tmp) / "data"),
                                    "--workers", str(args.workers), "--level", "flash", "--max-queue", "1000"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if service.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the service did not start: {(Path(tmp) / 'api.log').read_text()[-2000:]}")
                time.sleep(0.2)
            started = time.monotonic()
            samples, failed = asyncio.run(soak(base, pdf, args.jobs, args.concurrency, service.pid))
            seconds = time.monotonic() - started
        finally:
            service.send_signal(signal.SIGINT)
            try:
                service.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
            log.close()
    result = {
        "benchmark": "soak",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "note": "2-core CPU dev machine shared with other engineers' test runs"},
        "command": " ".join(["python benchmarks/soak.py", *sys.argv[1:]]),
        "jobs": args.jobs, "workers": args.workers, "concurrency": args.concurrency, "tier": "flash",
        "document": "1 page, born-digital (reportlab)",
        "failed_jobs": failed,
        "seconds": round(seconds, 1),
        "jobs_per_second": round(args.jobs / seconds, 2),
        "service_rss_growth_bytes_per_100_jobs": round(growth_per_100(samples, "service_rss_bytes")),
        "service_rss_growth_bytes_per_100_jobs_after_first_100": round(
            growth_per_100(samples, "service_rss_bytes", skip_jobs=SAMPLE_EVERY)),
        "samples": samples,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.jobs} jobs in {seconds:.0f} s ({failed} failed); service RSS growth "
          f"{result['service_rss_growth_bytes_per_100_jobs_after_first_100'] / 2**20:.2f} MiB per 100 jobs "
          f"after the first 100 -> {RESULTS}")


if __name__ == "__main__":
    main()
