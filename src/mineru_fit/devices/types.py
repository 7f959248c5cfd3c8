"""What the hardware is, as small frozen records. One Inventory freezes one moment."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class MemoryInfo:
    """Device memory in bytes. `reserved_bytes` is driver-reserved (NVML v2 only, else 0)."""

    total_bytes: int
    free_bytes: int
    used_bytes: int
    reserved_bytes: int = 0


@dataclass(frozen=True)
class GpuProcess:
    """A process holding GPU memory. `used_bytes` is None where the driver will not say."""

    pid: int
    name: str = ""
    used_bytes: Optional[int] = None
    kind: str = "compute"  # compute | graphics | compute+graphics


@dataclass(frozen=True)
class Gpu:
    """One CUDA device. `index` is its CUDA ordinal (after CUDA_VISIBLE_DEVICES); `nvml_index`
    is nvidia-smi's number (for a MIG instance: its parent's)."""

    index: int
    name: str
    memory: MemoryInfo
    uuid: str = ""
    compute_capability: Optional[tuple[int, int]] = None
    processes: tuple[GpuProcess, ...] = ()
    utilization_pct: Optional[int] = None
    memory_utilization_pct: Optional[int] = None
    temperature_c: Optional[int] = None
    power_w: Optional[float] = None
    power_limit_w: Optional[float] = None
    nvml_index: Optional[int] = None
    # MIG instances of this GPU (only when MIG is enabled); CUDA_VISIBLE_DEVICES=MIG-... picks one.
    mig_devices: tuple["Gpu", ...] = ()

    @property
    def is_mig(self) -> bool:
        return self.uuid.startswith("MIG-")

    @property
    def supports_bf16(self) -> bool:
        # Ampere (sm80) and newer have native bf16; older cards emulate it slowly or not at all.
        return self.compute_capability is not None and self.compute_capability >= (8, 0)

    @property
    def supports_fp8(self) -> bool:
        # fp8 tensor cores arrived with Ada (sm89) and Hopper (sm90).
        return self.compute_capability is not None and self.compute_capability >= (8, 9)


@dataclass(frozen=True)
class Inventory:
    """The GPUs one backend saw at one moment; an empty `gpus` comes with a `reason`."""

    backend: str  # nvml | torch | mps | fake | none
    gpus: tuple[Gpu, ...] = ()
    driver_version: Optional[str] = None
    cuda_driver_version: Optional[str] = None
    nvml_memory_v2: bool = False
    reason: Optional[str] = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists when dumped); the `devices --json` body."""
        return asdict(self)
