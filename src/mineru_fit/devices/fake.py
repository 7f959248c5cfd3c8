"""FakeNvml: a stand-in for the `pynvml` module, answering from a snapshot file.

It exposes the function names, error classes and constants the NVML backend uses and behaves
like pynvml on the machine the snapshot describes (calls before nvmlInit fail, functions an old
driver lacks raise FunctionNotFound, unsupported values raise NotSupported), so tests run the
real devices/nvml.py code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from mineru_fit.devices.snapshot import (
    GpuSnapshot,
    MemorySnapshot,
    MigDeviceSnapshot,
    ProcessSnapshot,
    Snapshot,
    load_snapshot,
)


class NVMLError(Exception):
    """Base of the fake's NVML errors; `value` is the NVML return code, as in pynvml."""

    value = 999
    text = "Unknown Error"

    def __str__(self) -> str:
        return self.text


def _error(name: str, value: int, text: str) -> type[NVMLError]:
    return type(f"NVMLError_{name}", (NVMLError,), {"value": value, "text": text, "__module__": __name__})


# Codes as in nvml.h, so messages and comparisons look like the real module's.
NVMLError_Uninitialized = _error("Uninitialized", 1, "Uninitialized")
NVMLError_NotSupported = _error("NotSupported", 3, "Not Supported")
NVMLError_NoPermission = _error("NoPermission", 4, "Insufficient Permissions")
NVMLError_NotFound = _error("NotFound", 6, "Not Found")
NVMLError_DriverNotLoaded = _error("DriverNotLoaded", 9, "Driver Not Loaded")
NVMLError_LibraryNotFound = _error("LibraryNotFound", 12, "NVML Shared Library Not Found")
NVMLError_FunctionNotFound = _error("FunctionNotFound", 13, "Function Not Found")
NVMLError_LibRmVersionMismatch = _error("LibRmVersionMismatch", 18, "RM has detected an NVML/RM version mismatch.")
NVMLError_Unknown = _error("Unknown", 999, "Unknown Error")


class NVMLLibraryMismatchError(Exception):
    """pynvml raises this (not an NVMLError) when an unversioned wrapper's function is missing."""


@dataclass(frozen=True)
class _Handle:
    gpu: int
    mig: Optional[int] = None


@dataclass
class _Memory:
    total: int
    free: int
    used: int
    reserved: int = 0
    version: int = 0


@dataclass
class _Process:
    pid: int
    usedGpuMemory: Optional[int]  # noqa: N815 - pynvml's field name
    gpuInstanceId: int = 0xFFFFFFFF  # noqa: N815
    computeInstanceId: int = 0xFFFFFFFF  # noqa: N815


@dataclass
class _Utilization:
    gpu: int
    memory: int


class FakeNvml:
    """Module-like NVML answering from `snapshot`; `hide` removes names (an older pynvml)."""

    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVMLError_LibRmVersionMismatch = NVMLError_LibRmVersionMismatch
    NVMLError_Unknown = NVMLError_Unknown
    NVMLLibraryMismatchError = NVMLLibraryMismatchError
    NVML_TEMPERATURE_GPU = 0
    nvmlMemory_v2 = 0x02000028
    nvmlTemperature_v1 = 0x0100000C

    def __init__(self, snapshot: Snapshot, *, hide: Iterable[str] = ()) -> None:
        self._snapshot = snapshot
        self._hidden = frozenset(hide)
        self._missing = frozenset(snapshot.nvml.missing_functions)
        self.init_count = 0
        self.calls: list[str] = []  # names called, in order: lets tests see which version answered

    @classmethod
    def from_file(cls, path: Union[str, Path], *, hide: Iterable[str] = ()) -> "FakeNvml":
        return cls(load_snapshot(Path(path)), hide=hide)

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name in object.__getattribute__(self, "_hidden"):
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    # --- library and system ---
    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        if self._snapshot.nvml.init_error is not None:
            raise getattr(self, f"NVMLError_{self._snapshot.nvml.init_error}")()
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")
        self.init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._call("nvmlSystemGetDriverVersion")
        return _supported(self._snapshot.nvml.driver_version)

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._call("nvmlSystemGetCudaDriverVersion")
        major, minor = _supported(self._snapshot.nvml.cuda_driver_version).split(".")
        return int(major) * 1000 + int(minor) * 10

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._call("nvmlSystemGetCudaDriverVersion_v2")
        return self.nvmlSystemGetCudaDriverVersion()

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._call("nvmlSystemGetProcessName")
        for process in self._all_processes():
            if process.pid == pid and process.name:
                return process.name
        raise NVMLError_NotFound()

    # --- devices ---
    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return len(self._snapshot.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._call("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self._snapshot.gpus):
            raise NVMLError_NotFound()
        return _Handle(index)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        self._call("nvmlDeviceGetName")
        return self._device(handle).name

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._call("nvmlDeviceGetUUID")
        return _supported(self._device(handle).uuid or None)

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: Optional[int] = None) -> _Memory:
        # pynvml calls the C function nvmlDeviceGetMemoryInfo_v2 when a version is given.
        self._call("nvmlDeviceGetMemoryInfo_v2" if version else "nvmlDeviceGetMemoryInfo")
        if version and not self._snapshot.nvml.memory_v2:
            raise NVMLError_FunctionNotFound()
        m: MemorySnapshot = self._device(handle).memory
        if version:
            return _Memory(m.total_bytes, m.free_bytes, m.used_bytes, m.reserved_bytes, version)
        # v1 has no reserved field: the driver's reserve is counted as used.
        return _Memory(m.total_bytes, m.free_bytes, m.used_bytes + m.reserved_bytes)

    def nvmlDeviceGetCudaComputeCapability(self, handle: _Handle) -> tuple[int, int]:
        self._call("nvmlDeviceGetCudaComputeCapability")
        return _supported(self._physical(handle).compute_capability)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> _Utilization:
        self._call("nvmlDeviceGetUtilizationRates")
        gpu = self._physical(handle)
        if gpu.utilization_pct is None and gpu.memory_utilization_pct is None:
            raise NVMLError_NotSupported()
        return _Utilization(gpu.utilization_pct or 0, gpu.memory_utilization_pct or 0)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        self._call("nvmlDeviceGetTemperature")
        return _supported(self._physical(handle).temperature_c)

    def nvmlDeviceGetTemperatureV(self, handle: _Handle, sensor: int, version: int = nvmlTemperature_v1) -> int:
        self._call("nvmlDeviceGetTemperatureV")
        return _supported(self._physical(handle).temperature_c)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        self._call("nvmlDeviceGetPowerUsage")
        return _milliwatts(self._physical(handle).power_w)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        self._call("nvmlDeviceGetEnforcedPowerLimit")
        return _milliwatts(self._physical(handle).power_limit_w)

    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        self._call("nvmlDeviceGetPowerManagementLimit")
        return _milliwatts(self._physical(handle).power_limit_w)

    # --- processes: _v3, _v2 and the unversioned wrapper, as in pynvml ---
    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: _Handle) -> list[_Process]:
        self._call("nvmlDeviceGetComputeRunningProcesses_v3")
        return self._processes(handle, "compute")

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: _Handle) -> list[_Process]:
        self._call("nvmlDeviceGetComputeRunningProcesses_v2")
        return self._processes(handle, "compute")

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[_Process]:
        return self._unversioned("nvmlDeviceGetComputeRunningProcesses", handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses_v3(self, handle: _Handle) -> list[_Process]:
        self._call("nvmlDeviceGetGraphicsRunningProcesses_v3")
        return self._processes(handle, "graphics")

    def nvmlDeviceGetGraphicsRunningProcesses_v2(self, handle: _Handle) -> list[_Process]:
        self._call("nvmlDeviceGetGraphicsRunningProcesses_v2")
        return self._processes(handle, "graphics")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[_Process]:
        return self._unversioned("nvmlDeviceGetGraphicsRunningProcesses", handle, "graphics")

    # --- MIG ---
    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        self._call("nvmlDeviceGetMigMode")
        if handle.mig is not None or not self._physical(handle).mig_devices:
            raise NVMLError_NotSupported()
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        self._call("nvmlDeviceGetMaxMigDeviceCount")
        if not self._physical(handle).mig_devices:
            raise NVMLError_NotSupported()
        return 7  # the A100/H100 maximum; unused slots answer NotFound

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        self._call("nvmlDeviceGetMigDeviceHandleByIndex")
        if not 0 <= index < len(self._physical(handle).mig_devices):
            raise NVMLError_NotFound()
        return _Handle(handle.gpu, index)

    # --- plumbing ---
    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if name in self._missing:
            raise NVMLError_FunctionNotFound()

    def _call(self, name: str) -> None:
        self._enter(name)
        if self.init_count <= 0:
            raise NVMLError_Uninitialized()

    def _unversioned(self, name: str, handle: _Handle, kind: str) -> list[_Process]:
        self._call(name)
        # The wrapper calls _v3; on a driver without it pynvml raises its mismatch error.
        if f"{name}_v3" in self._missing:
            raise NVMLLibraryMismatchError(f"{name}: use a versioned function such as {name}_v2")
        return self._processes(handle, kind)

    def _physical(self, handle: _Handle) -> GpuSnapshot:
        if not isinstance(handle, _Handle) or not 0 <= handle.gpu < len(self._snapshot.gpus):
            raise NVMLError_NotFound()
        return self._snapshot.gpus[handle.gpu]

    def _device(self, handle: _Handle) -> Union[GpuSnapshot, MigDeviceSnapshot]:
        gpu = self._physical(handle)
        return gpu if handle.mig is None else gpu.mig_devices[handle.mig]

    def _processes(self, handle: _Handle, kind: str) -> list[_Process]:
        return [
            _Process(p.pid, p.used_bytes)
            for p in self._device(handle).processes
            if p.kind in (kind, "compute+graphics")
        ]

    def _all_processes(self) -> Iterable[ProcessSnapshot]:
        for gpu in self._snapshot.gpus:
            yield from gpu.processes
            for mig in gpu.mig_devices:
                yield from mig.processes


def _supported(value: Any) -> Any:
    if value is None:
        raise NVMLError_NotSupported()
    return value


def _milliwatts(watts: Optional[float]) -> int:
    return int(round(_supported(watts) * 1000))
