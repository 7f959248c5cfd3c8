"""The service's side of a worker process: start it, hand it a job, read its events, stop or kill it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from mineru_fit.service.runner import RunRequest

logger = logging.getLogger(__name__)

LINE_LIMIT_BYTES = 64 * 1024 * 1024   # a done event carries the whole report
START_TIMEOUT_S = 120.0


class RunnerCrashed(Exception):
    """The worker process ended in the middle of a job (a parser crash, the OOM killer, a kill)."""

    def __init__(self, returncode: Optional[int]) -> None:
        if returncode is not None and returncode < 0:
            how = f"was killed by {signal.Signals(-returncode).name}"
        else:
            how = f"exited with code {returncode}"
        super().__init__(f"the parse worker process {how}")
        self.returncode = returncode


class JobFailed(Exception):
    """The worker ran the job and it failed as a whole (the reason is the message)."""


class RunnerProcess:
    """One `python -m mineru_fit.service.runner`; runs jobs one after another."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.jobs_run = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # Its own session: a Ctrl-C meant for the service does not hit a worker mid-page;
            # the service stops its workers itself.
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mineru_fit.service.runner",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                start_new_session=True, limit=LINE_LIMIT_BYTES, env=_child_env(),
            )
        event = await asyncio.wait_for(self._next(), START_TIMEOUT_S)
        if event.get("event") != "ready":
            raise RunnerCrashed(self.proc.returncode)

    async def _next(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                raise RunnerCrashed(await self.proc.wait())
            try:
                event = json.loads(line)
            except ValueError:
                logger.warning("ignoring a line from the worker that is not an event: %r", line[:200])
                continue
            if isinstance(event, dict):
                return event

    async def run(self, request: RunRequest, on_event: Callable[[dict[str, Any]], None],
                  timeout_s: float) -> dict[str, Any]:
        """The job's report; RunnerCrashed, JobFailed, or TimeoutError (the process is then killed)."""
        if not self.alive:
            await self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.jobs_run += 1
        try:
            self.proc.stdin.write(request.to_line().encode("utf-8"))
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise RunnerCrashed(await self.proc.wait()) from exc
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                event = await asyncio.wait_for(self._next(), max(left, 0.001))
                kind = event.get("event")
                if kind == "done":
                    return dict(event.get("report") or {})
                if kind == "failed":
                    raise JobFailed(str(event.get("error") or "the job failed"))
                on_event(event)
        except JobFailed:
            raise
        except BaseException:
            # A timeout, a cancellation (the service stops) or a crash: this process is in an
            # unknown state, so it goes; the next job gets a fresh one.
            await self.kill()
            raise

    async def kill(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # docvortex's own pool workers go with it
        except ProcessLookupError:
            pass
        await proc.wait()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Close its input (it exits after the job in hand), then kill what is left."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), grace_s)
        except (asyncio.TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        await self.kill()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The worker imports mineru_fit from wherever this process did (a source checkout included).
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env
