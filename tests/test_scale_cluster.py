"""`parse --ray` on a two-node cluster on loopback: each node declares one GPU and replays its own
recorded NVML snapshot (a different card), so each engine actor plans for its card; one actor is
killed mid-run and no page is lost — Ray restarts it and its pages run one level lower."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

# Ray's token authentication, on for every cluster here; read from the environment when ray is imported.
os.environ.setdefault("RAY_AUTH_MODE", "token")
pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("reportlab")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("mineru_vl_utils")

from fixtures.documents import many_pages_pdf  # noqa: E402
from fixtures.ray_nodes import ray_nodes  # noqa: E402
from fixtures.servers import free_port  # noqa: E402
from fixtures.tiny_qwen2vl import build_tiny_qwen2vl  # noqa: E402

from mineru_fit.devices import read_inventory  # noqa: E402
from mineru_fit.models import load_spec  # noqa: E402
from mineru_fit.parsing import ParseOptions, Status  # noqa: E402
from mineru_fit.parsing.observer import ParseObserver  # noqa: E402
from mineru_fit.planner import Hardware, make_report  # noqa: E402
from mineru_fit.planner.inputs import PlanRequest  # noqa: E402
from mineru_fit.scale import RayJob, parse_on_ray  # noqa: E402

SNAPSHOTS = Path(__file__).parent / "data" / "nvml"
CARDS = ("rtx3060_12gb.json", "rtx4090_24gb.json")
PAGES = 12
SETTLE_S = 0.3


def engine_actor_pids(busy_only: bool) -> list[int]:
    """Processes Ray runs our engine actors in (their title names the class and the method running)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "MapBatches(EngineActor)" in title and (not busy_only or ".submit" in title):
            pids.append(int(entry.name))
    return pids


class KillOneActorMidRun(threading.Thread):
    """SIGKILL the first engine actor seen working on a batch (as an OOM killer would), once."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.killed: Optional[int] = None
        self.done = threading.Event()

    def run(self) -> None:
        seen: dict[int, float] = {}  # busy pid -> when first seen busy
        while not self.done.is_set() and self.killed is None:
            now = time.monotonic()
            busy = engine_actor_pids(busy_only=True)
            seen = {pid: seen.get(pid, now) for pid in busy}
            # Busy for a while: past Ray Data's hand-over of the batch, inside the actor's own call.
            settled = [pid for pid, since in seen.items() if now - since >= SETTLE_S]
            if settled:
                self.killed = settled[0]
                os.kill(self.killed, signal.SIGKILL)
            time.sleep(0.02)


class Statuses(ParseObserver):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def status(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture(scope="module")
def cluster() -> Any:
    nodes = [{"MINERU_FIT_RAY_SNAPSHOT": str(SNAPSHOTS / card)} for card in CARDS]
    with ray_nodes(free_port(), nodes, cpus=2, gpus=1) as address:
        yield address


def test_each_actor_plans_for_its_card_and_a_killed_actor_loses_no_page(cluster, tmp_path) -> None:
    model = build_tiny_qwen2vl(tmp_path / "tiny")
    pdf = many_pages_pdf(tmp_path / "report.pdf", PAGES)
    request = PlanRequest(engine="builtin", model=str(model))
    job = RayJob(address=cluster, tier="vlm", model_id="tiny", model_dir=model, request=request, max_new_tokens=8,
                 batch_pages=2)
    killer, observer = KillOneActorMidRun(), Statuses()
    killer.start()
    try:
        result = parse_on_ray([pdf], ParseOptions(out_dir=tmp_path / "out", dpi=36), job, observer=observer,
                              say=lambda line: None)
    finally:
        killer.done.set()

    # Every actor planned for the card its node recorded: that card's free memory, that plan.
    expected = {}
    for card in CARDS:
        gpu = read_inventory(None, simulate=SNAPSHOTS / card).gpus[0]
        hw = Hardware.from_gpu(name=gpu.name, total_bytes=gpu.memory.total_bytes, free_bytes=gpu.memory.free_bytes,
                               gpu_count=1, compute_capability=gpu.compute_capability)
        expected[gpu.name] = make_report(load_spec(model), hw, request)
    planned = {a.info["device"]: a for a in result.actors}
    assert sorted(planned) == sorted(expected) and len(result.actors) == 2
    budgets = {name: report.plan.budget_bytes for name, report in expected.items()}
    assert len(set(budgets.values())) == 2  # two cards, two budgets: a plan cannot pass for the other's
    for name, actor in planned.items():
        report = expected[name]
        assert actor.info["chosen_level"] == report.chosen_level and actor.info["budget_bytes"] == budgets[name]
        if not actor.restarts:
            assert actor.info["plan"] == report.plan.model_dump(mode="json")
    # One actor was killed while it held pages; Ray restarted it one level lower and nothing was lost.
    assert killer.killed is not None
    [restarted] = [a for a in result.actors if a.restarts]
    assert restarted.restarts == 1 and restarted.info["pid"] != killer.killed
    chosen = expected[restarted.info["device"]]
    models = [p.level for p in chosen.levels if p.level != "flash"]
    lower = models[models.index(chosen.chosen_level) + 1]
    assert restarted.info["level"] == lower
    assert restarted.info["plan"] == next(p for p in chosen.levels if p.level == lower).model_dump(mode="json")
    pages = result.report.files[0].pages
    assert result.report.status is Status.success and [r.page_idx for r in pages] == list(range(PAGES))
    retried = [r for r in pages if r.retries]
    assert retried and all(r.level == lower for r in retried), observer.lines
    assert sum(a.pages for a in result.actors) >= PAGES  # a retried batch counts where it ran
    assert any("restarted by Ray" in s for s in observer.lines)
