"""NVML backend: reads every GPU NVML sees into an Inventory, over a module-like `nvml` object.

The real object is `pynvml` (nvidia-ml-py); tests pass a FakeNvml built from a snapshot, so
this exact code runs in both. Every NVML call goes through `NvmlSession.query`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from mineru_fit.devices.types import Gpu, GpuProcess, Inventory, MemoryInfo
from mineru_fit.units import GIB, gib

logger = logging.getLogger(__name__)

# Versioned names first: newer drivers fill more fields, older ones lack the function.
COMPUTE_PROCESSES = (
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlDeviceGetComputeRunningProcesses",
)
GRAPHICS_PROCESSES = (
    "nvmlDeviceGetGraphicsRunningProcesses_v3",
    "nvmlDeviceGetGraphicsRunningProcesses_v2",
    "nvmlDeviceGetGraphicsRunningProcesses",
)
CUDA_DRIVER_VERSION = ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion")
# nvmlDeviceGetTemperature is deprecated (removed in CUDA 14); the V form replaces it.
TEMPERATURE = ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature")
POWER_LIMIT = ("nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit")
NVML_TEMPERATURE_GPU = 0

# Above this much memory in use with no process listed, someone we cannot see holds it.
_INVISIBLE_USE_BYTES = 1 * GIB

_INIT_REASONS = {
    "NVMLError_LibraryNotFound": "NVML library not found (no NVIDIA driver installed)",
    "NVMLError_DriverNotLoaded": "NVIDIA driver not loaded",
    "NVMLError_NoPermission": "no permission to query NVML",
    "NVMLError_LibRmVersionMismatch": "NVIDIA driver and NVML library versions differ (reboot after a driver update)",
}


class NvmlSession:
    """One NVML connection: starts lazily, probes versioned functions, never raises NVML errors."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self._started = False
        self.init_error: Optional[str] = None
        self.last_error: Optional[str] = None

    def start(self) -> bool:
        """Initialise NVML once; False (and `init_error` set) when it cannot be used."""
        if self._started:
            return True
        if self.init_error is not None:
            return False
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as exc:
            self.init_error = _INIT_REASONS.get(type(exc).__name__, f"NVML failed to start: {exc}")
        except OSError as exc:  # a broken libnvidia-ml.so can fail before NVML maps the error
            self.init_error = f"NVML library could not be loaded: {exc}"
        else:
            self._started = True
            return True
        logger.info("NVML unavailable: %s", self.init_error)
        return False

    def close(self) -> None:
        if self._started:
            self._started = False
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError as exc:
                logger.debug("nvmlShutdown failed: %s", exc)

    def __enter__(self) -> "NvmlSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def query(self, names: Union[str, Sequence[str]], *args: Any, **kwargs: Any) -> Any:
        """Call the first of `names` this module and driver have; None when none answers."""
        if not self.start():
            return None
        candidates = (names,) if isinstance(names, str) else tuple(names)
        not_found = self._not_found_errors()
        for name in candidates:
            func = getattr(self.nvml, name, None)
            if func is None:
                continue
            try:
                return func(*args, **kwargs)
            except not_found:
                logger.debug("%s: not in this driver, trying the next version", name)
                continue
            except self.nvml.NVMLError as exc:
                # NotSupported, NoPermission, NotFound...: a value this GPU will not give.
                self.last_error = f"{name}: {exc}"
                logger.debug("%s", self.last_error)
                return None
        self.last_error = f"{candidates[0]}: not available in this NVML"
        return None

    def _not_found_errors(self) -> tuple[type[BaseException], ...]:
        errors: list[type[BaseException]] = [self.nvml.NVMLError_FunctionNotFound]
        # pynvml wraps unversioned calls and re-raises FunctionNotFound as this (not an NVMLError).
        mismatch = getattr(self.nvml, "NVMLLibraryMismatchError", None)
        if mismatch is not None:
            errors.append(mismatch)
        return tuple(errors)


def read_nvml_inventory(session: NvmlSession, *, proc_root: Optional[Path] = Path("/proc")) -> Inventory:
    """Every GPU NVML sees, in NVML (nvidia-smi) order; backend "none" with a reason if NVML is out.

    `proc_root` names processes NVML cannot name; None skips that (simulated machines)."""
    if not session.start():
        return Inventory(backend="none", reason=session.init_error)
    count = session.query("nvmlDeviceGetCount")
    driver_version = _text(session.query("nvmlSystemGetDriverVersion"))
    cuda_version = _cuda_version(session.query(CUDA_DRIVER_VERSION))
    if not count:
        reason = "NVML sees no GPU" if count == 0 else f"NVML cannot count GPUs ({session.last_error})"
        return Inventory(backend="nvml", driver_version=driver_version, cuda_driver_version=cuda_version, reason=reason)

    gpus: list[Gpu] = []
    warnings: list[str] = []
    memory_v2 = True
    for index in range(count):
        handle = session.query("nvmlDeviceGetHandleByIndex", index)
        if handle is None:
            warnings.append(f"GPU {index} cannot be opened ({session.last_error}) — check `nvidia-smi`")
            continue
        gpu, used_v2 = _read_gpu(session, handle, index, proc_root, warnings)
        memory_v2 = memory_v2 and used_v2
        gpus.append(gpu)
    return Inventory(
        backend="nvml",
        gpus=tuple(gpus),
        driver_version=driver_version,
        cuda_driver_version=cuda_version,
        nvml_memory_v2=memory_v2 and bool(gpus),
        reason=None if gpus else "no GPU could be opened",
        warnings=tuple(warnings),
    )


def _read_gpu(
    session: NvmlSession, handle: Any, index: int, proc_root: Optional[Path], warnings: list[str]
) -> tuple[Gpu, bool]:
    memory, used_v2 = _memory(session, handle)
    if memory is None:
        warnings.append(f"GPU {index}: memory cannot be read ({session.last_error}) — shown as 0")
        memory = MemoryInfo(total_bytes=0, free_bytes=0, used_bytes=0)
    capability = session.query("nvmlDeviceGetCudaComputeCapability", handle)
    utilization = session.query("nvmlDeviceGetUtilizationRates", handle)
    processes = _processes(session, handle, proc_root)
    gpu = Gpu(
        index=index,
        nvml_index=index,
        name=_text(session.query("nvmlDeviceGetName", handle)) or "unknown NVIDIA GPU",
        uuid=_text(session.query("nvmlDeviceGetUUID", handle)) or "",
        memory=memory,
        compute_capability=(int(capability[0]), int(capability[1])) if capability else None,
        processes=processes,
        utilization_pct=_int(getattr(utilization, "gpu", None)),
        memory_utilization_pct=_int(getattr(utilization, "memory", None)),
        temperature_c=_int(session.query(TEMPERATURE, handle, NVML_TEMPERATURE_GPU)),
        power_w=_watts(session.query("nvmlDeviceGetPowerUsage", handle)),
        power_limit_w=_watts(session.query(POWER_LIMIT, handle)),
        mig_devices=_mig_devices(session, handle, index, capability, proc_root),
    )
    # With MIG on, processes are listed per instance, not on the parent.
    if not processes and not gpu.mig_devices and memory.used_bytes > _INVISIBLE_USE_BYTES:
        warnings.append(
            f"GPU {index}: {gib(memory.used_bytes)} in use but NVML lists no process (another container "
            "or user?) — plan with the free memory, not the total"
        )
    return gpu, used_v2


def _memory(session: NvmlSession, handle: Any) -> tuple[Optional[MemoryInfo], bool]:
    # v1 "used" counts driver-reserved memory on new drivers; v2 reports it apart.
    version_v2 = getattr(session.nvml, "nvmlMemory_v2", None)
    if version_v2 is not None:
        info = session.query("nvmlDeviceGetMemoryInfo", handle, version=version_v2)
        if info is not None:
            return (
                MemoryInfo(
                    total_bytes=int(info.total),
                    free_bytes=int(info.free),
                    used_bytes=int(info.used),
                    reserved_bytes=int(info.reserved),
                ),
                True,
            )
    info = session.query("nvmlDeviceGetMemoryInfo", handle)
    if info is None:
        return None, False
    return MemoryInfo(total_bytes=int(info.total), free_bytes=int(info.free), used_bytes=int(info.used)), False


def _processes(session: NvmlSession, handle: Any, proc_root: Optional[Path]) -> tuple[GpuProcess, ...]:
    # A process can be in both lists (nvidia-smi's "C+G"): keep one row per pid.
    by_pid: dict[int, GpuProcess] = {}
    for kind, names in (("compute", COMPUTE_PROCESSES), ("graphics", GRAPHICS_PROCESSES)):
        for entry in session.query(names, handle) or ():
            pid = int(entry.pid)
            used = getattr(entry, "usedGpuMemory", None)
            used = None if used is None else int(used)
            seen = by_pid.get(pid)
            if seen is None:
                by_pid[pid] = GpuProcess(pid=pid, name=_process_name(session, pid, proc_root), used_bytes=used, kind=kind)
            else:
                both = max((v for v in (seen.used_bytes, used) if v is not None), default=None)
                by_pid[pid] = GpuProcess(pid=pid, name=seen.name, used_bytes=both, kind="compute+graphics")
    return tuple(by_pid[pid] for pid in sorted(by_pid))


def _process_name(session: NvmlSession, pid: int, proc_root: Optional[Path]) -> str:
    name = _text(session.query("nvmlSystemGetProcessName", pid))
    if name:
        return name
    if proc_root is None:
        return ""
    try:
        # In a container NVML often cannot name host pids; /proc can for our own namespace.
        return (proc_root / str(pid) / "comm").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _mig_devices(
    session: NvmlSession,
    handle: Any,
    parent_index: int,
    capability: Optional[tuple[int, int]],
    proc_root: Optional[Path],
) -> tuple[Gpu, ...]:
    mode = session.query("nvmlDeviceGetMigMode", handle)
    if not mode or int(mode[0]) != 1:
        return ()
    devices: list[Gpu] = []
    for slot in range(int(session.query("nvmlDeviceGetMaxMigDeviceCount", handle) or 0)):
        mig = session.query("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
        if mig is None:  # empty slot
            continue
        memory, _ = _memory(session, mig)
        devices.append(
            Gpu(
                index=len(devices),
                nvml_index=parent_index,
                name=_text(session.query("nvmlDeviceGetName", mig)) or "MIG instance",
                uuid=_text(session.query("nvmlDeviceGetUUID", mig)) or "",
                memory=memory or MemoryInfo(total_bytes=0, free_bytes=0, used_bytes=0),
                compute_capability=(int(capability[0]), int(capability[1])) if capability else None,
                processes=_processes(session, mig, proc_root),
            )
        )
    return tuple(devices)


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


def _watts(milliwatts: Any) -> Optional[float]:
    return None if milliwatts is None else int(milliwatts) / 1000.0


def _cuda_version(value: Any) -> Optional[str]:
    # NVML encodes 12.4 as 12040.
    if value is None:
        return None
    value = int(value)
    return f"{value // 1000}.{(value % 1000) // 10}"
