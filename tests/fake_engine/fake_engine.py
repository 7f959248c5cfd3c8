"""A stand-in for `python -m sglang.launch_server` / `vllm serve` on machines without a GPU.

It parses the argv it is given (SGLang when --model-path is there, else vLLM), replays a
recorded startup log of that engine (logs/), and when the start succeeds answers /health,
/v1/models and /metrics on --host/--port until SIGTERM/SIGINT.

Environment (all optional):
  FAKE_ENGINE_SCENARIO       start (default) | oom | kv | crash | crash-oom | hang
  FAKE_ENGINE_FAIL_ABOVE_CONTEXT=N, FAKE_ENGINE_FAIL_AS=oom|kv
                             fail that way while the context length (--context-length /
                             --max-model-len) is above N: a lighter level then starts
  FAKE_ENGINE_CRASH_AFTER_S  seconds of serving before crash / crash-oom (default 0.5)
  FAKE_ENGINE_GRANDCHILD=1   start a worker process in the same group, as the engines do
  FAKE_ENGINE_PIDFILE=PATH   write {"leader": pid, "grandchild": pid|null, "argv": [...]}
  FAKE_ENGINE_IGNORE_TERM=1  ignore SIGTERM (the supervisor must SIGKILL)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOGS = Path(__file__).parent / "logs"


def parse(argv: list[str]) -> tuple[str, argparse.Namespace, list[str]]:
    engine = "sglang" if "--model-path" in argv else "vllm"
    parser = argparse.ArgumentParser(prog=engine, add_help=False)
    if engine == "sglang":
        parser.add_argument("--model-path", required=True)
        parser.add_argument("--context-length", type=int)
        parser.add_argument("--mem-fraction-static", type=float)
    else:
        parser.add_argument("model")
        parser.add_argument("--max-model-len", type=int)
        parser.add_argument("--gpu-memory-utilization", type=float)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000 if engine == "sglang" else 8000)
    args, unknown = parser.parse_known_args(argv)
    return engine, args, unknown


def scenario(context: int | None) -> str:
    limit = os.environ.get("FAKE_ENGINE_FAIL_ABOVE_CONTEXT")
    if limit and context is not None and context > int(limit):
        return os.environ.get("FAKE_ENGINE_FAIL_AS", "oom")
    return os.environ.get("FAKE_ENGINE_SCENARIO", "start")


def replay(path: Path, part: str = "all") -> None:
    """Print a recorded log: all of it, or the part before/after the @@SERVE@@ marker."""
    lines = path.read_text().splitlines()
    cut = lines.index("@@SERVE@@") if "@@SERVE@@" in lines else len(lines)
    chosen = {"all": lines[:cut] + lines[cut + 1:], "before": lines[:cut], "after": lines[cut + 1:]}[part]
    for line in chosen:
        print(line, flush=True)


def serve(engine: str, host: str, port: int, model: str) -> ThreadingHTTPServer:
    metric = "sglang:num_running_reqs 0" if engine == "sglang" else "vllm:num_requests_running 0"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            bodies = {
                "/health": ("text/plain", b""),
                "/v1/models": ("application/json", json.dumps({"object": "list", "data": [{"id": model}]}).encode()),
                "/metrics": ("text/plain", (metric + "\n").encode()),
            }
            if self.path not in bodies:
                self.send_error(404)
                return
            kind, body = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    engine, args, unknown = parse(sys.argv[1:])
    context = args.context_length if engine == "sglang" else args.max_model_len
    model = args.model_path if engine == "sglang" else args.model
    grandchild = None
    if os.environ.get("FAKE_ENGINE_GRANDCHILD") == "1":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    pidfile = os.environ.get("FAKE_ENGINE_PIDFILE")
    if pidfile:
        Path(pidfile).write_text(json.dumps({"leader": os.getpid(), "grandchild": grandchild and grandchild.pid,
                                             "argv": sys.argv[1:]}))
    if os.environ.get("FAKE_ENGINE_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"fake {engine}: argv {' '.join(sys.argv[1:])}", flush=True)
    if unknown:
        print(f"fake {engine}: passed through {' '.join(unknown)}", flush=True)
    what = scenario(context)
    if what in ("oom", "kv"):
        replay(LOGS / f"{engine}_{what}.log")
        return 1
    replay(LOGS / f"{engine}_start.log", "before")
    if what == "hang":
        time.sleep(600)
        return 1
    server = serve(engine, args.host, args.port, model)
    replay(LOGS / f"{engine}_start.log", "after")
    stop = threading.Event()
    if os.environ.get("FAKE_ENGINE_IGNORE_TERM") != "1":
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if what in ("crash", "crash-oom"):
        stop.wait(float(os.environ.get("FAKE_ENGINE_CRASH_AFTER_S", "0.5")))
        server.shutdown()
        if what == "crash-oom":
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.20 GiB.", flush=True)
        else:
            print("RuntimeError: CUDA error: an illegal memory access was encountered", flush=True)
        return 1
    while not stop.wait(0.1):
        pass
    server.shutdown()
    print(f"fake {engine}: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
