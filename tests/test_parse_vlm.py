"""The vlm tier end to end on CPU with a tiny random Qwen2-VL: blocks are noise; paging, batching,
out-of-memory retries, level step-down, checkpoints and MinerU's output files are real."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("mineru_vl_utils")
pytest.importorskip("reportlab")

import torch  # noqa: E402
from fixtures.servers import free_port, running_builtin  # noqa: E402
from fixtures.tiny_qwen2vl import build_tiny_qwen2vl  # noqa: E402

from mineru_fit.engines.builtin.generation import FaultInjection  # noqa: E402
from mineru_fit.engines.builtin.options import BuiltinOptions  # noqa: E402
from mineru_fit.models import load_spec  # noqa: E402
from mineru_fit.parsing import ParseOptions, Status, TierChoice, VlmSetup, parse_documents  # noqa: E402
from mineru_fit.parsing.observer import ParseObserver  # noqa: E402
from mineru_fit.parsing.sample import write_sample_pdf  # noqa: E402
from mineru_fit.planner import Hardware, PlanRequest, make_report  # noqa: E402
from mineru_fit.units import GIB  # noqa: E402

VLM = TierChoice("vlm", "test")
OUTPUT_CAP = 12  # tokens per request: noise never stops early, so keep answers short on the CPU
DPI = 72


class Recorder(ParseObserver):
    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.pages: list[Any] = []

    def status(self, text: str) -> None:
        self.statuses.append(text)

    def page_finished(self, name: str, record: Any) -> None:
        self.pages.append(record)


class FailFirst:
    """Out of memory on the first `n` generate calls, whatever their size (then never again)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def check(self, jobs: list[Any]) -> None:
        if self.left > 0:
            self.left -= 1
            raise torch.OutOfMemoryError(f"injected: {self.left} more to come")


class Counting:
    """Wraps the engine's FaultInjection and counts the OOMs it raised."""

    def __init__(self, inner: FaultInjection) -> None:
        self.inner = inner
        self.raised = 0

    def check(self, jobs: list[Any]) -> None:
        try:
            self.inner.check(jobs)
        except torch.OutOfMemoryError:
            self.raised += 1
            raise


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_pdf(tmp_path_factory.mktemp("in") / "sample.pdf")


@pytest.fixture(scope="module")
def levels(model_dir: Path) -> dict[str, Any]:
    report = make_report(load_spec(model_dir), Hardware.cpu(16 * GIB),
                         PlanRequest(engine="builtin", model=str(model_dir), concurrency=4))
    assert report.chosen_level == "none" and report.plan.batch_size == 4
    return {p.level: p for p in report.levels}


def setup(model_dir: Path, levels: dict[str, Any], names: tuple[str, ...] = ("none", "basic"),
          faults: Optional[Callable[[str], Any]] = None) -> VlmSetup:
    return VlmSetup(model_dir=model_dir, levels=tuple(levels[n] for n in names), max_new_tokens=OUTPUT_CAP,
                    model_name="tiny", faults=faults)


def run(sample: Path, out: Path, vlm: VlmSetup, **options: Any) -> tuple[Any, Recorder]:
    recorder = Recorder()
    report = parse_documents([sample], ParseOptions(out_dir=out, dpi=DPI, **options), VLM, vlm=vlm, observer=recorder)
    return report, recorder


def test_in_process_every_page_lands_in_mineru_files_and_a_rerun_resumes(model_dir, levels, sample, tmp_path) -> None:
    report, recorder = run(sample, tmp_path, setup(model_dir, levels))
    assert report.status is Status.success and report.pages_ok == 3
    folder = tmp_path / "sample" / "vlm"
    pages = json.loads((folder / "sample_pages.json").read_text())
    assert [p["page_idx"] for p in pages] == [0, 1, 2]
    for page in pages:
        assert page["ok"] and page["tier"] == "vlm" and page["level"] == "none"
        assert page["batch_size"] == 4 and 1 <= page["concurrency"] <= 4 and page["seconds"] > 0
    assert isinstance(json.loads((folder / "sample_content_list.json").read_text()), list)
    assert (folder / "sample.md").is_file()
    assert sorted(p.name for p in (folder / ".checkpoints").glob("page_*.json")) == [
        "page_00000.json", "page_00001.json", "page_00002.json"]
    assert any("built-in engine" in s for s in recorder.statuses)
    again, recorder = run(sample, tmp_path, setup(model_dir, levels))
    assert again.status is Status.success and all(r.resumed for r in again.files[0].pages)
    assert not recorder.statuses  # nothing left to do: the model is not even loaded


def test_an_oom_batch_is_split_by_the_engine_and_no_page_is_lost(model_dir, levels, sample, tmp_path) -> None:
    fault = Counting(FaultInjection(min_batch=2))
    report, _ = run(sample, tmp_path, setup(model_dir, levels, faults=lambda level: fault))
    assert fault.raised >= 1
    assert report.status is Status.success and report.pages_ok == 3


def test_a_page_rejected_for_memory_is_retried_with_fewer_pages_at_once(model_dir, levels, sample, tmp_path) -> None:
    fault = FailFirst(6)  # enough for the engine to give up on at least one request (its 503)
    report, recorder = run(sample, tmp_path, setup(model_dir, levels, faults=lambda level: fault))
    records = report.files[0].pages
    assert report.status is Status.success and [r.page_idx for r in records] == [0, 1, 2]
    retried = [r for r in records if r.retries]
    assert retried and all(r.concurrency < 4 for r in retried)
    assert any("out of memory" in s for s in recorder.statuses)


def test_a_page_too_big_even_alone_steps_the_engine_down_a_level(model_dir, levels, sample, tmp_path) -> None:
    always = FaultInjection(min_batch=1)
    report, recorder = run(sample, tmp_path, setup(model_dir, levels, faults=lambda lv: always if lv == "none" else None))
    assert report.status is Status.success
    assert {r.level for r in report.files[0].pages} == {"basic"}
    assert any("stepping down" in s for s in recorder.statuses) and any("now at level basic" in s for s in recorder.statuses)


def test_out_of_memory_at_every_level_fails_pages_with_the_reason_never_silently(model_dir, levels, sample, tmp_path) -> None:
    always = FaultInjection(min_batch=1)
    report, _ = run(sample, tmp_path, setup(model_dir, levels, faults=lambda level: always), pages=None)
    result = report.files[0]
    assert result.status is Status.failure and report.exit_code == 1 and len(result.pages) == 3
    assert all("out of memory even alone" in r.error for r in result.pages)
    md = (tmp_path / "sample" / "vlm" / "sample.md").read_text()
    assert md.count("not converted: out of memory") == 3
    assert not list((tmp_path / "sample" / "vlm" / ".checkpoints").glob("page_*.json"))  # a rerun retries them


def test_through_a_running_server_with_mineru_http_client(model_dir, sample, tmp_path) -> None:
    options = BuiltinOptions(model=str(model_dir), device="cpu", dtype="float32", port=free_port(), max_model_len=2048,
                             max_new_tokens=OUTPUT_CAP, max_batch_size=4, batch_wait_ms=300, served_model_name="tiny")
    # A long batching window so the three pages' layout requests meet in one batch, which then OOMs.
    with running_builtin(options, FaultInjection(min_batch=2)) as (base, state):
        report, _ = run(sample, tmp_path, VlmSetup(server_url=base, concurrency=4, model_name="tiny"))
        splits = dict((labels["action"], value) for labels, value in state.metrics.snapshot()["mineru_fit_oom_events"])
    assert report.status is Status.success and report.pages_ok == 3
    assert splits["split"] >= 1  # the server split an OOM batch; every page still came back
    records = report.files[0].pages
    assert all(r.level is None and r.batch_size == 4 for r in records)


def test_the_in_process_client_runs_mineru_extraction_on_given_blocks(model_dir, levels) -> None:
    from PIL import Image, ImageDraw

    from mineru_fit.parsing.builders.vlm_blocks import page_items
    from mineru_fit.parsing.vlm.backends import InProcessBackend

    page = Image.new("RGB", (600, 800), "white")
    ImageDraw.Draw(page).text((50, 50), "Results and a table", fill="black")
    blocks = [{"type": "title", "bbox": [0.05, 0.05, 0.9, 0.1]}, {"type": "text", "bbox": [0.05, 0.12, 0.9, 0.3]},
              {"type": "table", "bbox": [0.05, 0.4, 0.9, 0.7]}, {"type": "equation", "bbox": [0.2, 0.75, 0.8, 0.8]}]

    async def extract() -> list[Any]:
        backend = InProcessBackend([levels["none"]], model_dir, max_new_tokens=OUTPUT_CAP)
        await backend.start()
        try:
            return list(await backend.mineru.aio_extract_with_layout(page, blocks))
        finally:
            await backend.close()

    extracted = asyncio.run(extract())
    assert [b["type"] for b in extracted] == ["title", "text", "table", "equation"]
    assert all(isinstance(b["content"], str) for b in extracted)
    items, crops = page_items(extracted, page, 0)
    table = next(i for i in items if i["type"] == "table")
    assert "table_body" in table and any(path == table["img_path"] for path, _ in crops)
