"""A parse worker process: `python -m mineru_fit.service.runner`, one job at a time.

Jobs arrive as JSON lines on stdin; events (file started, page settled, done) leave as JSON
lines on the original stdout, which libraries cannot write to (their prints go to stderr). Each
job runs in a process of its own because PDFium is not thread-safe, because a document that
crashes a parser must take down only its own job, and because memory a parse leaves behind
is returned when the process is replaced. The process dies with the service that started it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from mineru_fit.errors import MineruFitError


@dataclass(frozen=True)
class RunRequest:
    """One job, as the worker process needs it."""

    job_id: str
    inputs: tuple[str, ...]
    out_dir: str
    tier: str                          # vlm | flash
    tier_reason: str = ""
    pages: Optional[str] = None        # 1-based selection text
    server_url: Optional[str] = None   # vlm: the engine
    concurrency: Optional[int] = None  # vlm: pages in flight for this job
    max_model_len: Optional[int] = None
    model_name: str = ""
    device_mode: Optional[str] = None

    def to_line(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    @classmethod
    def from_line(cls, line: str) -> "RunRequest":
        data = json.loads(line)
        data["inputs"] = tuple(data["inputs"])
        return cls(**data)


def _events(send: Callable[[dict[str, Any]], None]) -> Any:
    from mineru_fit.parsing.observer import ParseObserver

    class Events(ParseObserver):
        def file_started(self, name: str, pages: int, resumed: int) -> None:
            send({"event": "file", "name": name, "pages": pages, "resumed": resumed})

        def page_finished(self, name: str, record: Any) -> None:
            send({"event": "page", "name": name, "page_idx": record.page_idx, "ok": record.ok, "error": record.error})

        def status(self, text: str) -> None:
            send({"event": "status", "text": text})

    return Events()


def run_job(request: RunRequest, send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Parse one job's files; the report as parsing.ParseReport.to_dict()."""
    from mineru_fit.parsing import PageSelection, ParseOptions, TierChoice, VlmSetup, parse_documents

    options = ParseOptions(out_dir=Path(request.out_dir),
                           pages=PageSelection.parse(request.pages) if request.pages else None)
    vlm = None
    if request.tier == "vlm":
        vlm = VlmSetup(server_url=request.server_url, concurrency=request.concurrency,
                       max_model_len=request.max_model_len, device_mode=request.device_mode,
                       model_name=request.model_name)
    report = parse_documents([Path(p) for p in request.inputs], options, TierChoice(request.tier, request.tier_reason),
                             vlm=vlm, observer=_events(send))
    return report.to_dict()


def _die_with_parent(parent: int) -> None:
    """Exit when the service dies, even by kill -9: nothing may go on writing a job it no longer owns."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="mineru-fit-parent-watch", daemon=True).start()


def _quiet_libraries() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("pypdfium2").setLevel(logging.ERROR)
    try:
        from loguru import logger
    except ImportError:
        return
    logger.remove()
    logger.add(sys.stderr, level="ERROR")


def serve(requests: TextIO, protocol: TextIO) -> None:
    """Run each request read from `requests`; write its events to `protocol`. Returns at end of input."""
    lock = threading.Lock()

    def send(event: dict[str, Any]) -> None:
        with lock:
            protocol.write(json.dumps(event) + "\n")
            protocol.flush()

    send({"event": "ready", "pid": os.getpid()})
    while True:
        line = requests.readline()
        if not line:
            return
        try:
            request = RunRequest.from_line(line)
        except (ValueError, TypeError) as exc:
            send({"event": "failed", "error": f"unreadable request: {exc}"})
            continue
        try:
            send({"event": "done", "job_id": request.job_id, "report": run_job(request, send)})
        except Exception as exc:  # the job fails with the reason; the process stays for the next one
            error = str(exc) if isinstance(exc, MineruFitError) else f"{type(exc).__name__}: {exc}"
            send({"event": "failed", "job_id": request.job_id, "error": error})


def main() -> None:
    parent = os.getppid()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # from here on, anything printed goes to the log, not into the protocol
    _die_with_parent(parent)
    _quiet_libraries()
    serve(sys.stdin, protocol)


if __name__ == "__main__":  # docvortex's spawn pool re-imports this module: only the real start runs main
    main()
