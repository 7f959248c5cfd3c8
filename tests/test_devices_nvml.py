"""Each NVML snapshot, replayed through FakeNvml and the real NVML backend, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from mineru_fit.devices import read_inventory, read_machine_inventory
from mineru_fit.devices.fake import FakeNvml
from mineru_fit.devices.nvml import NvmlSession, read_nvml_inventory
from mineru_fit.units import GIB, MIB

NVML_DATA = Path(__file__).parent / "data" / "nvml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "MINERU_DEVICE_MODE"):
        monkeypatch.delenv(name, raising=False)


def _read(fake: FakeNvml, proc_root: Path | None = None):
    with NvmlSession(fake) as session:
        return read_nvml_inventory(session, proc_root=proc_root)


def test_h100_reports_v2_memory_and_the_co_tenant_process() -> None:
    inv = read_inventory(simulate=NVML_DATA / "h100_80gb_1gpu.json")
    assert inv.backend == "fake" and inv.reason is None
    assert inv.driver_version == "550.54.15" and inv.cuda_driver_version == "12.4"
    assert inv.nvml_memory_v2 is True
    (gpu,) = inv.gpus
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.memory.total_bytes == 81559 * MIB
    assert gpu.memory.reserved_bytes == 543 * MIB
    assert gpu.memory.used_bytes == 5254 * MIB  # the co-tenant only: v2 keeps the reserve apart
    assert gpu.memory.free_bytes + gpu.memory.used_bytes + gpu.memory.reserved_bytes == gpu.memory.total_bytes
    assert gpu.compute_capability == (9, 0) and gpu.supports_fp8
    assert (gpu.utilization_pct, gpu.memory_utilization_pct, gpu.temperature_c) == (23, 4, 36)
    assert (gpu.power_w, gpu.power_limit_w) == (118.42, 700.0)
    (process,) = gpu.processes
    assert (process.pid, process.name, process.kind) == (48213, "python3", "compute")
    assert 5 * GIB < process.used_bytes < 5.2 * GIB


def test_v1_used_includes_the_driver_reserve_when_pynvml_lacks_memory_v2() -> None:
    # An older nvidia-ml-py has no nvmlMemory_v2: the backend must fall back to the v1 call.
    fake = FakeNvml.from_file(NVML_DATA / "h100_80gb_1gpu.json", hide=("nvmlMemory_v2",))
    inv = _read(fake)
    assert inv.nvml_memory_v2 is False
    memory = inv.gpus[0].memory
    assert memory.used_bytes == (5254 + 543) * MIB
    assert memory.reserved_bytes == 0
    assert memory.free_bytes + memory.used_bytes == memory.total_bytes
    assert "nvmlDeviceGetMemoryInfo_v2" not in fake.calls


def test_old_driver_falls_back_to_v1_memory_and_v2_process_calls() -> None:
    fake = FakeNvml.from_file(NVML_DATA / "old_driver_no_v2.json")
    inv = _read(fake)
    assert inv.nvml_memory_v2 is False
    assert inv.driver_version == "470.82.01" and inv.cuda_driver_version == "11.4"
    (gpu,) = inv.gpus
    assert gpu.name == "Tesla T4" and gpu.compute_capability == (7, 5)
    assert not gpu.supports_bf16
    assert gpu.memory.total_bytes == 15843721216 and gpu.memory.reserved_bytes == 0
    assert gpu.memory.used_bytes == 1507 * MIB
    assert [p.name for p in gpu.processes] == ["python"]
    # Probed newest first: _v3 and TemperatureV are missing, so _v2 and the plain call answer.
    assert fake.calls.index("nvmlDeviceGetComputeRunningProcesses_v3") < fake.calls.index(
        "nvmlDeviceGetComputeRunningProcesses_v2"
    )
    assert "nvmlDeviceGetTemperature" in fake.calls and gpu.temperature_c == 42


def test_unversioned_process_wrapper_mismatch_is_skipped_not_raised() -> None:
    # pynvml's plain wrapper raises NVMLLibraryMismatchError (not an NVMLError) on old drivers.
    fake = FakeNvml.from_file(
        NVML_DATA / "old_driver_no_v2.json", hide=("nvmlDeviceGetComputeRunningProcesses_v2",)
    )
    inv = _read(fake)
    assert inv.gpus[0].processes == ()
    assert "nvmlDeviceGetComputeRunningProcesses" in fake.calls


def test_container_lists_no_process_and_warns_about_hidden_memory() -> None:
    inv = read_inventory(simulate=NVML_DATA / "container_no_processes.json")
    (gpu,) = inv.gpus
    assert gpu.processes == ()
    assert gpu.memory.used_bytes == 9830 * MIB
    assert any("no process" in w and "9.6 GiB" in w for w in inv.warnings)


def test_nvml_missing_is_a_normal_answer_with_a_reason() -> None:
    inv = read_inventory(simulate=NVML_DATA / "nvml_missing.json")
    assert inv.backend == "none" and not inv.has_gpu
    assert "NVML library not found" in inv.reason


def test_laptop_on_windows_has_unknown_process_memory_and_no_power() -> None:
    inv = read_inventory(simulate=NVML_DATA / "rtx4060_laptop_8gb.json")
    (gpu,) = inv.gpus
    assert gpu.memory.total_bytes == 8188 * MIB
    assert gpu.power_w is None and gpu.power_limit_w is None
    assert [(p.kind, p.used_bytes) for p in gpu.processes] == [("graphics", None), ("graphics", None)]
    assert gpu.processes[0].name.endswith("explorer.exe")


@pytest.mark.parametrize(
    ("file", "name", "total_mib", "cc"),
    [
        ("rtx4060_laptop_8gb.json", "NVIDIA GeForce RTX 4060 Laptop GPU", 8188, (8, 9)),
        ("rtx3060_12gb.json", "NVIDIA GeForce RTX 3060", 12288, (8, 6)),
        ("rtx4060ti_16gb.json", "NVIDIA GeForce RTX 4060 Ti", 16380, (8, 9)),
        ("rtx4090_24gb.json", "NVIDIA GeForce RTX 4090", 24564, (8, 9)),
        ("four_gpu_l4.json", "NVIDIA L4", 23034, (8, 9)),
    ],
)
def test_consumer_and_datacenter_cards_report_their_size(file: str, name: str, total_mib: int, cc: tuple) -> None:
    inv = read_inventory(simulate=NVML_DATA / file)
    gpu = inv.gpus[0]
    assert gpu.name == name
    assert gpu.memory.total_bytes == total_mib * MIB
    assert gpu.compute_capability == cc and gpu.supports_bf16


def test_desktop_processes_are_graphics_and_compute() -> None:
    inv = read_inventory(simulate=NVML_DATA / "rtx4090_24gb.json")
    kinds = {p.name: p.kind for p in inv.gpus[0].processes}
    assert kinds == {"/usr/lib/xorg/Xorg": "graphics", "/usr/bin/gnome-shell": "graphics", "python": "compute"}


def test_four_l4_in_nvml_order_with_their_own_processes() -> None:
    inv = read_inventory(simulate=NVML_DATA / "four_gpu_l4.json")
    assert [g.index for g in inv.gpus] == [0, 1, 2, 3]
    assert [len(g.processes) for g in inv.gpus] == [0, 1, 0, 1]
    assert inv.gpus[1].memory.used_bytes == 17920 * MIB
    assert inv.warnings == ()  # identical GPUs: no numbering caveat


def test_process_in_both_lists_is_one_row(tmp_path: Path) -> None:
    text = (NVML_DATA / "rtx3060_12gb.json").read_text().replace('"graphics"', '"compute+graphics"', 1)
    snapshot = tmp_path / "cg.json"
    snapshot.write_text(text)
    fake = FakeNvml.from_file(snapshot)
    processes = _read(fake).gpus[0].processes
    assert [(p.pid, p.kind) for p in processes] == [(1650, "compute+graphics"), (1893, "graphics")]


def test_unnamed_process_is_named_from_proc(tmp_path: Path) -> None:
    text = (NVML_DATA / "h100_80gb_1gpu.json").read_text().replace('"name": "python3"', '"name": ""')
    snapshot = tmp_path / "unnamed.json"
    snapshot.write_text(text)
    proc_root = tmp_path / "proc"
    (proc_root / "48213").mkdir(parents=True)
    (proc_root / "48213" / "comm").write_text("sglang::schedu\n")
    assert _read(FakeNvml.from_file(snapshot), proc_root=proc_root).gpus[0].processes[0].name == "sglang::schedu"
    # Replays never look in this machine's /proc: the pid belongs to the recorded machine.
    assert read_inventory(simulate=snapshot).gpus[0].processes[0].name == ""


def test_nvml_starts_lazily_and_shuts_down() -> None:
    fake = FakeNvml.from_file(NVML_DATA / "h100_80gb_1gpu.json")
    session = NvmlSession(fake)
    assert fake.calls == []  # nothing happens until the first query
    assert session.query("nvmlDeviceGetCount") == 1
    assert fake.calls[:2] == ["nvmlInit", "nvmlDeviceGetCount"] and fake.init_count == 1
    session.close()
    assert fake.init_count == 0


def test_query_returns_none_instead_of_raising() -> None:
    fake = FakeNvml.from_file(NVML_DATA / "rtx4060_laptop_8gb.json")
    with NvmlSession(fake) as session:
        handle = session.query("nvmlDeviceGetHandleByIndex", 0)
        assert session.query("nvmlDeviceGetPowerUsage", handle) is None  # NotSupported
        assert session.query("nvmlDeviceGetHandleByIndex", 5) is None  # NotFound
        assert session.query("nvmlDeviceGetNoSuchThing", handle) is None  # not in this module
        assert session.query(("nvmlDeviceGetNoSuchThing", "nvmlDeviceGetName"), handle).endswith("Laptop GPU")


def test_missing_nvml_keeps_a_reason_and_never_raises() -> None:
    fake = FakeNvml.from_file(NVML_DATA / "nvml_missing.json")
    session = NvmlSession(fake)
    assert session.query("nvmlDeviceGetCount") is None
    assert session.init_error.startswith("NVML library not found")
    assert read_nvml_inventory(session).reason == session.init_error


def test_this_machine_without_nvml_reads_as_no_gpu() -> None:
    # The test machines have no NVIDIA driver; on one that does, this still must not raise.
    inv = read_machine_inventory()
    assert inv.backend in ("none", "nvml")
    if inv.backend == "none":
        assert inv.reason and not inv.gpus


def test_fake_mirrors_the_real_pynvml_module() -> None:
    # The fake must not invent NVML names or codes: what the backend calls on it exists in pynvml.
    import inspect

    pynvml = pytest.importorskip("pynvml")
    names = [n for n in vars(FakeNvml) if n.startswith(("nvml", "NVML"))]
    assert len(names) > 30
    for name in names:
        assert hasattr(pynvml, name), name
        fake_attr, real_attr = getattr(FakeNvml, name), getattr(pynvml, name)
        if inspect.isfunction(fake_attr):
            fake_params = list(inspect.signature(fake_attr).parameters.values())[1:]  # drop self
            real_params = list(inspect.signature(real_attr).parameters.values())
            assert len(fake_params) == len(real_params), name
            # Positional names may differ (handle/device); keyword-with-default ones must not.
            assert [p.name for p in fake_params if p.default is not p.empty] == [
                p.name for p in real_params if p.default is not p.empty
            ], name
        elif isinstance(fake_attr, int):
            assert fake_attr == real_attr, name
        elif isinstance(fake_attr, type) and issubclass(fake_attr, FakeNvml.NVMLError) and fake_attr is not FakeNvml.NVMLError:
            assert real_attr().value == fake_attr.value, name
