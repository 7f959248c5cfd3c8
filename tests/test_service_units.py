"""The service's pure parts: safe names, mineru-api's form and backend names, the job store, the memory panel."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from mineru_fit.devices import read_inventory  # noqa: E402
from mineru_fit.errors import RequestRefusedError  # noqa: E402
from mineru_fit.service.files import safe_filename  # noqa: E402
from mineru_fit.service.jobs import JobFile, JobOptions, JobStatus  # noqa: E402
from mineru_fit.service.memory import memory_panel, panel_markdown  # noqa: E402
from mineru_fit.service.metrics import PageRate  # noqa: E402
from mineru_fit.service.mineru_form import ParseForm, map_backend, page_selection  # noqa: E402
from mineru_fit.service.store import JobStore  # noqa: E402
from mineru_fit.units import MIB  # noqa: E402

NVML = Path(__file__).parent / "data" / "nvml"


@pytest.mark.parametrize("raw, stored", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd.pdf", "passwd.pdf"),
    ("/abs/path/x.PDF", "x.pdf"),
    ("C:\\Users\\me\\scan.png", "scan.png"),
    ("..", "document"),
    ("", "document"),
    (None, "document"),
    (".hidden.pdf", "hidden.pdf"),
    ("a\x00b\n.pdf", "ab.pdf"),
    ("weird <name>|*?.pdf", "weird__name.pdf"),
    ("Grundriß 第一章.pdf", "Grundriß_第一章.pdf"),
    ("x" * 300 + ".pdf", "x" * 100 + ".pdf"),
])
def test_client_names_become_safe_file_names(raw, stored) -> None:
    name = safe_filename(raw, set())
    assert name == stored
    assert "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")


def test_names_are_unique_per_job_by_stem() -> None:
    used: set[str] = set()
    names = [safe_filename(n, used) for n in ("a.pdf", "A.pdf", "a.png", "dir/a.pdf", "a_2.pdf")]
    assert names == ["a.pdf", "A_2.pdf", "a_3.png", "a_4.pdf", "a_2_2.pdf"]
    assert len({Path(n).stem.casefold() for n in names}) == len(names)


@pytest.mark.parametrize("backend, tier", [
    ("pipeline", "flash"), ("flash", "flash"), ("auto", "auto"), ("", "auto"), ("vlm", "vlm"),
    ("vlm-transformers", "vlm"), ("vlm-vllm-engine", "vlm"), ("vlm-http-client", "vlm"), ("hybrid-auto-engine", "vlm"),
    ("VLM-SGLang-Engine", "vlm"), ("advanced", "vlm"),
])
def test_mineru_backend_names_map_to_tiers(backend, tier) -> None:
    assert map_backend(backend) == tier


def test_an_unknown_backend_is_refused_with_the_known_ones() -> None:
    with pytest.raises(RequestRefusedError, match="use auto, flash"):
        map_backend("magic")


def test_mineru_page_ids_count_from_zero_and_are_inclusive() -> None:
    assert page_selection(0, None) is None
    assert page_selection(0, 0).resolve(5)[0] == [0]
    assert page_selection(1, 2).resolve(5)[0] == [1, 2]
    assert page_selection(3, None).resolve(5)[0] == [3, 4]


def _form(**fields):
    return ParseForm.model_validate({"files": [], **fields})


@pytest.mark.parametrize("fields, message", [
    ({"server_url": "http://169.254.169.254/"}, "never contacts"),
    ({"return_middle_json": True}, "writes neither"),
    ({"start_page_id": 3, "end_page_id": 1}, "before start_page_id"),
    ({"backend": "pipeline", "tier": "vlm"}, "disagree"),
])
def test_form_fields_that_cannot_be_honoured_are_refused(fields, message) -> None:
    with pytest.raises(RequestRefusedError, match=message):
        _form(**fields).to_request()


def test_form_fields_that_do_not_apply_are_accepted() -> None:
    request = _form(backend="vlm-vllm-engine", lang_list=["en"], formula_enable=False, table_enable=False,
                    parse_method="ocr", output_dir="/tmp/anything", return_content_list=True,
                    response_format_zip=True, start_page_id=1).to_request()
    assert (request.tier, request.backend, request.zip, request.return_content_list) == ("vlm", "vlm-vllm-engine", True, True)
    assert request.pages is not None and request.pages.text == "2-"


def test_the_store_commits_and_requeues_interrupted_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    files = (JobFile("a", "a.pdf", "a.pdf", 10, "pdf", 3),)
    store.add("1" * 32, JobOptions(tier="flash"), files, 3)
    store.add("2" * 32, JobOptions(tier="flash"), files, 3)
    store.mark_running("1" * 32)
    store.close()
    # Another process (a restart) sees both, and the running one goes back to the queue first.
    again = JobStore(tmp_path / "jobs.sqlite3")
    assert again.requeue_running() == ["1" * 32]
    assert again.queued_ids() == ["1" * 32, "2" * 32]
    job = again.get("1" * 32)
    assert job is not None and job.status is JobStatus.queued and job.attempts == 1 and job.files == files
    again.finish("1" * 32, JobStatus.partial, pages_done=3, pages_failed=1, report={"status": "partial"})
    assert again.get("1" * 32).report == {"status": "partial"}  # type: ignore[union-attr]
    assert again.finished_before(9e18) == ["1" * 32]
    mode = sqlite3.connect(tmp_path / "jobs.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_memory_panel_without_a_gpu_says_so() -> None:
    text = panel_markdown(memory_panel(read_inventory("cpu"), set()))
    assert "no CUDA GPU" in text


def test_memory_panel_shows_used_of_total_and_the_engines_share() -> None:
    inventory = read_inventory(simulate=NVML / "rtx4090_shared_sglang.json")
    gpu = inventory.gpus[0]
    engine = next(p for p in gpu.processes if p.used_bytes)
    panel = memory_panel(inventory, {engine.pid})
    row = panel.rows[0]
    assert (row.used_bytes, row.total_bytes, row.engine_bytes) == (gpu.memory.used_bytes, gpu.memory.total_bytes,
                                                                   engine.used_bytes)
    text = panel_markdown(panel)
    assert gpu.name in text and "GiB" in text


def test_memory_panel_says_when_the_driver_hides_per_process_memory() -> None:
    inventory = read_inventory(simulate=NVML / "rtx4060_laptop_8gb.json")
    pid = inventory.gpus[0].processes[0].pid
    panel = memory_panel(inventory, {pid})
    assert panel.rows[0].engine_bytes is None and "unknown" in panel_markdown(panel)


def test_page_rate_counts_the_last_minute_only() -> None:
    now = [0.0]
    rate = PageRate(window_s=60, clock=lambda: now[0])
    rate.add(30)
    assert rate.per_second() == 0.5
    now[0] = 61.0
    rate.add(6)
    assert rate.per_second() == 0.1


def test_the_guard_stops_a_body_without_content_length_at_the_limit() -> None:
    from starlette.exceptions import HTTPException

    from mineru_fit.service.guard import FORM_OVERHEAD_BYTES, Guard

    received: list[int] = []
    chunk = {"type": "http.request", "body": b"0" * MIB, "more_body": True}

    async def app(scope, receive, send) -> None:  # reads the whole body, as a form parser does
        while True:
            message = await receive()
            received.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                return

    async def receive():
        return chunk

    guard = Guard(app, token=None, max_body_bytes=2 * MIB, capacity=lambda: None)
    scope = {"type": "http", "method": "POST", "path": "/tasks", "headers": []}
    with pytest.raises(HTTPException) as refused:
        asyncio.run(guard(scope, receive, None))
    assert refused.value.status_code == 413
    assert sum(received) <= 2 * MIB + FORM_OVERHEAD_BYTES  # an endless body is cut off, not spooled
