"""The service survives its disk. A store write that fails fails that job with its reason (never a hidden
"cannot rollback"), /health reports the store, submissions get a JSON 503 instead of a plain-text 500, and the
jobs left waiting run once the disk can be written again — no restart. Start-up on a full or read-only data dir
is one clear line.

A full disk is made real without root: RLIMIT_FSIZE (set on the running service with prlimit, raised again to
"free the space") makes every write of the service's process fail in the kernel, as ENOSPC would. A read-only
data dir is chmod 0555 — or, as root (whom modes do not stop), a read-only tmpfs.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

import httpx  # noqa: E402
from fixtures.documents import many_pages_pdf, pdf_with_pages  # noqa: E402
from fixtures.servers import free_port  # noqa: E402
from fixtures.service import BIN, api_process, service_env, wait_status  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="prlimit is Linux-only")

FSIZE = resource.RLIMIT_FSIZE


def _fill(pid: int) -> None:
    """From now on every file write of process `pid` fails (EFBIG), as on a full disk."""
    resource.prlimit(pid, FSIZE, (0, resource.getrlimit(FSIZE)[1]))


def _free(pid: int) -> None:
    hard = resource.getrlimit(FSIZE)[1]
    resource.prlimit(pid, FSIZE, (hard, hard))


def _submit(api: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return api.post("/tasks", files=[("files", (name, data, "application/pdf"))])


def test_a_full_disk_fails_the_job_it_hit_and_the_rest_resume_when_space_returns(tmp_path: Path) -> None:
    long = many_pages_pdf(tmp_path / "long.pdf", 150).read_bytes()
    short = pdf_with_pages(tmp_path / "short.pdf", ["text:Waited for the disk"]).read_bytes()
    data_dir = tmp_path / "data"
    with api_process(data_dir, "--workers", "1") as (base, proc), httpx.Client(base_url=base, timeout=30) as api:
        running = _submit(api, "long.pdf", long).json()
        queued = _submit(api, "short.pdf", short).json()
        wait_status(api, running["status_url"], {"running"})
        _fill(proc.pid)
        try:
            # The running job's result cannot be recorded: it fails, with the reason, and its waiter hears it.
            failed = wait_status(api, running["status_url"], {"failed", "succeeded", "partial"}, timeout_s=90)
            assert failed["status"] == "failed", failed
            assert "could not be recorded" in failed["error"] and "rollback" not in failed["error"]
            assert str(tmp_path) not in failed["error"]
            health = api.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            assert health.json()["store"]["writable"] is False and health.json()["store"]["error"]
            # New work is refused in JSON, with Retry-After; the queued job waits instead of failing.
            refused = _submit(api, "short.pdf", short)
            assert refused.status_code == 503 and refused.headers["content-type"] == "application/json"
            assert "disk" in refused.json()["detail"] and int(refused.headers["retry-after"]) >= 1
            time.sleep(3)
            waiting = api.get(queued["status_url"]).json()
            assert waiting["status"] == "queued" and "disk" in (waiting["current"] or ""), waiting
        finally:
            _free(proc.pid)
        # Space is back: the waiting job runs, the failure is on record, new jobs are taken.
        done = wait_status(api, queued["status_url"], {"succeeded", "failed", "partial"}, timeout_s=60)
        assert done["status"] == "succeeded", done
        assert "Waited for the disk" in api.get(queued["result_url"]).json()["results"]["short"]["md_content"]
        assert api.get("/health").json()["store"]["writable"] is True
        assert _submit(api, "again.pdf", short).status_code == 202
    # Its failure was written once the disk allowed it: a restart still knows it.
    with api_process(data_dir, "--workers", "1") as (base, _proc), httpx.Client(base_url=base, timeout=30) as api:
        again = api.get(running["status_url"]).json()
        assert again["status"] == "failed" and "could not be recorded" in again["error"]


def _start(data_dir: Path, preexec: Any = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mineru-fit"), "api", "--port", str(free_port()), "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, env=service_env(), preexec_fn=preexec)


def _one_clear_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: cannot use the data dir"), result.stderr
    assert "Traceback" not in result.stderr and all(word in lines[-1] for word in words), result.stderr


def test_start_up_on_a_full_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = _start(tmp_path / "data", preexec=lambda: resource.setrlimit(FSIZE, (0, resource.getrlimit(FSIZE)[1])))
    _one_clear_line(result, str(tmp_path / "data"), "--data-dir")


@contextmanager
def _read_only_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    mount = shutil.which("mount")
    if mount is None or subprocess.run([mount, "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                                       capture_output=True).returncode != 0:
        pytest.skip("as root a mode does not stop writes, and a read-only tmpfs cannot be mounted here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_start_up_on_a_read_only_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    with _read_only_dir(tmp_path) as folder:
        _one_clear_line(_start(folder / "service"), str(folder))
        _one_clear_line(_start(folder))


_STORE_SCRIPT = """
import json, resource, sys
from pathlib import Path
from mineru_fit.service.jobs import JobFile, JobOptions, JobStatus
from mineru_fit.service.store import JobStore
store = JobStore(Path(sys.argv[1]))
store.add("a" * 32, JobOptions(), (JobFile("x", "x.pdf", "x.pdf", 1, "pdf", 1),), 1)
store.mark_running("a" * 32)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    store.finish("a" * 32, JobStatus.succeeded, pages_done=1, pages_failed=0, report={"files": ["x" * 100_000]})
except Exception as exc:
    print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
"""


def test_a_failed_store_write_raises_its_own_reason_not_a_rollback_error(tmp_path: Path) -> None:
    import json
    import sys

    result = subprocess.run([sys.executable, "-c", _STORE_SCRIPT, str(tmp_path / "jobs.sqlite3")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    raised = json.loads(result.stdout)
    assert raised["type"] == "StoreError", raised
    assert "rollback" not in raised["message"] and ("disk" in raised["message"] or "full" in raised["message"])
