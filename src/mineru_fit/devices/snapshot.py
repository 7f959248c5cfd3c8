"""NVML snapshot files: what `devices --record` writes and `--simulate` (through FakeNvml) replays.

The format is described in tests/data/nvml/README.md. Files are validated with pydantic;
unknown keys are errors, and a bad file raises UsageError naming the file and the problem.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mineru_fit.devices.types import Gpu, GpuProcess, Inventory
from mineru_fit.errors import DeviceError, UsageError
from mineru_fit.units import MIB

logger = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "mineru-fit/nvml-snapshot"
# Hand-copied nvidia-smi figures are MiB-rounded, and some drivers' v2 parts miss the total by a
# little: allow 1 MiB or 0.5 % of the total, whichever is larger, so every recording replays.
_MEMORY_SLACK_BYTES = 1 * MIB
_MEMORY_SLACK_FRACTION = 0.005

InitError = Literal["LibraryNotFound", "DriverNotLoaded", "NoPermission", "LibRmVersionMismatch", "Unknown"]
# The Inventory.reason NVML gives for each; used to record a machine without NVML.
_REASON_PREFIX_TO_ERROR: tuple[tuple[str, InitError], ...] = (
    ("NVML library not found", "LibraryNotFound"),
    ("NVIDIA driver not loaded", "DriverNotLoaded"),
    ("no permission", "NoPermission"),
    ("NVIDIA driver and NVML library versions differ", "LibRmVersionMismatch"),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemorySnapshot(_Strict):
    """Bytes as NVML v2 reports them; with `memory_v2: false`, reserved is 0 and used includes it."""

    total_bytes: int = Field(ge=0, description="Physical device memory.")
    free_bytes: int = Field(ge=0, description="Memory nobody has allocated.")
    used_bytes: int = Field(ge=0, description="Memory processes (and, on v1, the driver) hold.")
    reserved_bytes: int = Field(default=0, ge=0, description="Driver/firmware reserve (NVML v2 only).")

    @model_validator(mode="after")
    def _adds_up(self) -> "MemorySnapshot":
        parts = self.free_bytes + self.used_bytes + self.reserved_bytes
        slack = max(_MEMORY_SLACK_BYTES, int(self.total_bytes * _MEMORY_SLACK_FRACTION))
        if abs(parts - self.total_bytes) > slack:
            raise ValueError(
                f"free_bytes + used_bytes + reserved_bytes = {parts} but total_bytes = {self.total_bytes}"
            )
        return self


class ProcessSnapshot(_Strict):
    pid: int = Field(ge=0)
    name: str = Field(default="", description="Empty: NVML cannot name it (as in many containers).")
    used_bytes: Optional[int] = Field(default=None, ge=0, description="None: the driver will not say.")
    kind: Literal["compute", "graphics", "compute+graphics"] = "compute"


class MigDeviceSnapshot(_Strict):
    name: str
    uuid: str = Field(pattern=r"^MIG-")
    memory: MemorySnapshot
    processes: list[ProcessSnapshot] = Field(default_factory=list)


class GpuSnapshot(_Strict):
    """One physical GPU in NVML order; None for a value means NVML answers NotSupported."""

    name: str
    uuid: str = ""
    memory: MemorySnapshot
    compute_capability: Optional[tuple[int, int]] = None
    utilization_pct: Optional[int] = Field(default=None, ge=0, le=100)
    memory_utilization_pct: Optional[int] = Field(default=None, ge=0, le=100)
    temperature_c: Optional[int] = None
    power_w: Optional[float] = Field(default=None, ge=0)
    power_limit_w: Optional[float] = Field(default=None, ge=0)
    processes: list[ProcessSnapshot] = Field(default_factory=list)
    mig_devices: list[MigDeviceSnapshot] = Field(default_factory=list)


class NvmlSnapshot(_Strict):
    """What the NVML library itself does on that machine."""

    init_error: Optional[InitError] = Field(default=None, description="nvmlInit raises NVMLError_<this>.")
    driver_version: Optional[str] = None
    cuda_driver_version: Optional[str] = Field(default=None, pattern=r"^\d+\.\d+$")
    memory_v2: bool = Field(default=True, description="The driver has nvmlDeviceGetMemoryInfo_v2.")
    missing_functions: list[str] = Field(
        default_factory=list, description="NVML functions this driver lacks (FunctionNotFound)."
    )


class Snapshot(_Strict):
    """A whole machine as NVML saw it at one moment."""

    format: Literal["mineru-fit/nvml-snapshot"]
    version: Literal[1]
    source: str = Field(default="", description="Where the numbers come from.")
    recorded_at: Optional[str] = None
    nvml: NvmlSnapshot = Field(default_factory=NvmlSnapshot)
    gpus: list[GpuSnapshot] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "Snapshot":
        if self.nvml.init_error is not None and self.gpus:
            raise ValueError("nvml.init_error is set, so gpus must be empty (NVML cannot list them)")
        if not self.nvml.memory_v2:
            for i, gpu in enumerate(self.gpus):
                if gpu.memory.reserved_bytes:
                    raise ValueError(f"gpus[{i}].memory.reserved_bytes must be 0 when nvml.memory_v2 is false")
        return self


def load_snapshot(path: Path) -> Snapshot:
    """Read and validate a snapshot file; UsageError with one line naming the file if it is bad."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"snapshot {path}: no such file — record one with `mineru-fit devices --record FILE`") from exc
    except OSError as exc:
        raise UsageError(f"snapshot {path}: cannot read it ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"snapshot {path}: not valid JSON ({exc}) — fix it or re-record with `mineru-fit devices --record FILE`"
        ) from exc
    try:
        return Snapshot.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(
            f"snapshot {path}: {_first_problem(exc)} — fix it or re-record with `mineru-fit devices --record FILE`"
        ) from exc


def write_snapshot(snapshot: dict[str, Any], path: Path) -> None:
    """Write a snapshot dict as indented JSON (validated first, so a recording always replays)."""
    try:
        Snapshot.model_validate(snapshot)
    except ValidationError as exc:
        raise DeviceError(f"cannot record {path}: {_first_problem(exc)} — please report this GPU's numbers") from exc
    try:
        Path(path).write_text(json.dumps(snapshot, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write snapshot {path}: {exc.strerror or exc}") from exc


def inventory_to_snapshot(inv: Inventory, *, source: str = "") -> dict[str, Any]:
    """The snapshot (as a JSON-ready dict) that FakeNvml turns back into this inventory."""
    nvml: dict[str, Any] = {
        "init_error": _init_error(inv),
        "driver_version": inv.driver_version,
        "cuda_driver_version": inv.cuda_driver_version,
        # An inventory read through v1 replays through v1, so "used" keeps its v1 meaning.
        "memory_v2": inv.nvml_memory_v2 or not inv.gpus,
        "missing_functions": [],
    }
    return {
        "format": SNAPSHOT_FORMAT,
        "version": 1,
        "source": source or f"recorded by mineru-fit from backend {inv.backend}",
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nvml": nvml,
        "gpus": [_gpu_to_dict(gpu) for gpu in inv.gpus],
    }


def _init_error(inv: Inventory) -> Optional[str]:
    if inv.backend != "none":
        return None
    reason = inv.reason or ""
    for prefix, error in _REASON_PREFIX_TO_ERROR:
        if reason.startswith(prefix):
            return error
    return "Unknown"


def _gpu_to_dict(gpu: Gpu) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": gpu.name,
        "uuid": gpu.uuid,
        "memory": _memory_to_dict(gpu),
        "compute_capability": list(gpu.compute_capability) if gpu.compute_capability else None,
        "utilization_pct": gpu.utilization_pct,
        "memory_utilization_pct": gpu.memory_utilization_pct,
        "temperature_c": gpu.temperature_c,
        "power_w": gpu.power_w,
        "power_limit_w": gpu.power_limit_w,
        "processes": [_process_to_dict(p) for p in gpu.processes],
    }
    if gpu.mig_devices:
        out["mig_devices"] = [
            {
                "name": mig.name,
                "uuid": mig.uuid,
                "memory": _memory_to_dict(mig),
                "processes": [_process_to_dict(p) for p in mig.processes],
            }
            for mig in gpu.mig_devices
        ]
    return out


def _memory_to_dict(gpu: Gpu) -> dict[str, int]:
    m = gpu.memory
    return {
        "total_bytes": m.total_bytes,
        "free_bytes": m.free_bytes,
        "used_bytes": m.used_bytes,
        "reserved_bytes": m.reserved_bytes,
    }


def _process_to_dict(process: GpuProcess) -> dict[str, Any]:
    return {"pid": process.pid, "name": process.name, "used_bytes": process.used_bytes, "kind": process.kind}


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err.get("loc", ())) or "top level"
    if err.get("type") == "extra_forbidden":
        return f"unknown key {where!r}"
    if err.get("type") == "missing":
        return f"missing key {where!r}"
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {message}"
