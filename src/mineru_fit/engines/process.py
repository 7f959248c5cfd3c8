"""An engine child process in its own process group, its output teed to a log file.

SGLang and vLLM start worker processes of their own; they stay in the child's process group,
so signalling the group reaches all of them and nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Optional, Sequence


class EngineProcess:
    """A started engine: its pid and group, and every line it has printed so far."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        self._lines: list[str] = []
        self._lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(
                list(argv), env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True, text=True, errors="replace", bufsize=1,
            )
        except OSError:
            self._log.close()
            raise
        self.pgid = self.proc.pid  # start_new_session: the child leads its own group
        self._reader = threading.Thread(target=self._read, name=f"engine-log-{self.proc.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            with self._lock:
                self._lines.append(line.rstrip("\n"))
        self._log.close()

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for the reader to reach the end of the output (after the child exited)."""
        self._reader.join(timeout_s)

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def group_alive(self) -> bool:
        """Any process of the group still running (zombies, dead but not yet reaped, do not count)."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        living = _living_members(self.pgid)
        return True if living is None else living > 0

    def stop(self, grace_s: float) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after `grace_s`; reap the child."""
        if self.group_alive():
            self.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                self.proc.poll()
                if not self.group_alive():
                    break
                time.sleep(0.05)
            if self.group_alive():
                self.signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=max(grace_s, 1.0))
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
        # Grandchildren killed with the group are reaped by init; wait until none is listed.
        deadline = time.monotonic() + 2.0
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.drain(1.0)


def _living_members(pgid: int) -> Optional[int]:
    """Processes of group `pgid` that are not zombies, from /proc (None where there is no /proc).

    A worker killed after its parent died waits as a zombie until init reaps it; it holds no
    memory, but kill(0) still finds it.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    count = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            count += 1
    return count


# The engine is on this machine: an http_proxy in the environment must not see the probe.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def healthy(url: str, timeout_s: float = 1.0) -> bool:
    """GET url answers 200 (SGLang and vLLM both serve /health)."""
    try:
        with _DIRECT.open(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, OSError, ValueError):
        return False
