"""Snapshots from recorded machines (FakeNvml), fake engines and run records; /proc ownership."""

from __future__ import annotations

from pathlib import Path

import pytest

from mineru_fit.devices import read_inventory
from mineru_fit.monitor import MemoryHistory, Sampler
from mineru_fit.monitor.procs import all_parents, ancestry, descendants, owner_of, process_environ, process_user
from mineru_fit.monitor.sampling import RECENT_WINDOW_S, process_rows
from fixtures.monitor import NVML, FakeClock, metrics_text, record, sampler


def test_one_gpu_snapshot_has_memory_history_process_and_time() -> None:
    clock = FakeClock()
    with sampler("h100_80gb_1gpu.json", clock=clock) as s:
        snap = s.sample()
    assert snap.time_s == clock.now_s and snap.inventory.backend == "fake" and snap.inventory.nvml_memory_v2
    assert [g.name for g in snap.gpus] == ["NVIDIA H100 80GB HBM3"]
    assert [(p.time_s, p.used_bytes) for p in snap.history_of(0)] == [(clock.now_s, 5509218304)]
    assert [(r.pid, r.name, r.engine) for r in snap.processes] == [(48213, "python3", None)]
    assert snap.simulated_from.endswith("h100_80gb_1gpu.json")


def test_four_gpus_keep_a_ring_buffer_each() -> None:
    clock = FakeClock()
    with Sampler(simulate=NVML / "four_gpu_l4.json", clock=clock, records=list, history_points=2) as s:
        for _ in range(3):
            snap = s.sample()
            clock.advance(1.0)
    assert len(snap.memory_history) == 4
    assert [len(h) for h in snap.memory_history] == [2, 2, 2, 2]  # capacity 2: the oldest point dropped
    assert [p.time_s for p in snap.history_of(1)] == [clock.now_s - 2.0, clock.now_s - 1.0]
    assert snap.history_of(1)[-1].used_bytes == 17920 * 1024**2
    assert {p.gpu_index for p in snap.processes} == {1, 3}


@pytest.mark.parametrize("name, backend, gpus, v2, processes", [
    ("container_no_processes.json", "fake", 1, True, 0),
    ("old_driver_no_v2.json", "fake", 1, False, 1),
    ("nvml_missing.json", "none", 0, False, 0),
])
def test_recorded_machines_replay(name: str, backend: str, gpus: int, v2: bool, processes: int) -> None:
    with sampler(name) as s:
        snap = s.sample()
    assert (snap.inventory.backend, len(snap.gpus), snap.inventory.nvml_memory_v2, len(snap.processes)) == (
        backend, gpus, v2, processes)
    if not gpus:
        assert "NVML library not found" in snap.inventory.reason and snap.memory_history == ()


def test_records_tag_processes_and_give_engines() -> None:
    rec = record("sglang", "basic", 5120, port=30000, argv=["python", "-m", "sglang.launch_server"])
    routes = {"http://127.0.0.1:30000/metrics": metrics_text("sglang_kv_high.prom")}
    with sampler("rtx4090_shared_sglang.json", routes=routes, records=[rec], engine_urls=["127.0.0.1:8000"]) as s:
        snap = s.sample()
    tags = {p.pid: p.engine.label if p.engine else None for p in snap.processes}
    assert tags == {5120: "mineru-fit sglang basic", 6001: None}
    assert [(e.name, e.reachable) for e in snap.engines] == [("sglang", True), ("unknown", False)]
    assert snap.engines[0].record == rec and snap.gpus_of_engine(snap.engines[0]) == snap.gpus


def test_environment_keeps_only_the_variables_the_advisor_judges() -> None:
    with sampler("h100_80gb_1gpu.json", environ={"CUDA_LAUNCH_BLOCKING": "1", "HOME": "/root", "API_KEY": "x"}) as s:
        snap = s.sample()
    assert snap.environ == {"CUDA_LAUNCH_BLOCKING": "1"}


def test_history_before_excludes_now_and_forgets_old_snapshots() -> None:
    clock = FakeClock()
    with sampler("h100_80gb_1gpu.json", clock=clock) as s:
        first = s.sample()
        clock.advance(30)
        second = s.sample()
        assert s.history_before(second) == (first,)
        clock.advance(RECENT_WINDOW_S + 1)
        third = s.sample()
        assert s.history_before(third) == ()  # the first two are older than the window


def test_memory_history_is_keyed_by_uuid_not_position() -> None:
    history = MemoryHistory(capacity=5)
    inventory = read_inventory(simulate=NVML / "four_gpu_l4.json")
    history.add(inventory, 1.0)
    only_last = type(inventory)(backend="fake", gpus=inventory.gpus[3:])
    buffers = history.add(only_last, 2.0)
    assert [p.time_s for p in buffers[0]] == [1.0, 2.0]  # GPU 3 kept its own buffer


def _fake_proc(root: Path, pid: int, parent: int, comm: str, uid: int = 0, environ: str = "") -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(f"{pid} ({comm}) S {parent} {pid} {pid} 0 -1 4194560 0 0\n")
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (d / "environ").write_bytes(environ.encode())


def test_engine_children_are_ours_through_their_parents(tmp_path: Path) -> None:
    # vLLM/SGLang hold GPU memory in a child: the record names the launcher, NVML the child.
    _fake_proc(tmp_path, 5100, 1, "python3")
    _fake_proc(tmp_path, 5120, 5100, "sglang::scheduler (tp 0)", environ="CUDA_LAUNCH_BLOCKING=1\0PATH=/bin\0")
    _fake_proc(tmp_path, 6001, 1, "python")
    assert ancestry(5120, tmp_path) == (5120, 5100)
    assert descendants(5100, all_parents(tmp_path)) == {5100, 5120}
    assert process_user(5120, tmp_path) == "root" and process_user(999, tmp_path) == ""
    assert process_environ(5120, ["CUDA_LAUNCH_BLOCKING"], tmp_path) == {"CUDA_LAUNCH_BLOCKING": "1"}
    rec = record("sglang", "aggressive", 5100)
    inventory = read_inventory(simulate=NVML / "rtx4090_shared_sglang.json")
    rows = {r.pid: r for r in process_rows(inventory, [rec], tmp_path)}
    assert rows[5120].engine.label == "mineru-fit sglang aggressive" and rows[5120].user == "root"
    assert rows[6001].engine is None
    assert owner_of((6001,), [rec]) is None
