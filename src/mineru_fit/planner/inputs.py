"""What the planner is asked: the user's flags (validated) and the hardware they point at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mineru_fit.units import GIB, gib

EngineName = Literal["builtin", "sglang", "vllm"]
LevelName = Literal["auto", "none", "basic", "aggressive", "extreme", "flash"]
DtypeName = Literal["auto", "bfloat16", "float16", "float32"]

_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


class PlanRequest(BaseModel):
    """The guide's flags and ours, as the planner takes them. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineName = Field("builtin", description="Which engine the plan is for.")
    level: LevelName = Field("auto", description="Optimisation level, or auto.")
    concurrency: Optional[int] = Field(None, ge=1, description="Requests in flight; default 8.")
    max_model_len: Optional[int] = Field(None, ge=1, description="Context length per request.")
    mem_fraction_static: Optional[float] = Field(None, description="SGLang's flag; a share of memory.")
    gpu_memory_utilization: Optional[float] = Field(None, description="vLLM's flag; a share of total memory.")
    load_in_4bit: bool = Field(False, description="bitsandbytes NF4 weights.")
    load_in_8bit: bool = Field(False, description="8-bit weights (int8 or fp8 by engine).")
    dtype: DtypeName = Field("auto", description="Compute dtype.")
    kv_cache_dtype: Literal["auto", "fp8"] = Field("auto", description="KV cache dtype.")
    tp_size: int = Field(1, ge=1, description="Tensor parallel GPUs per replica.")
    dp_size: int = Field(1, ge=1, description="Data parallel replicas.")
    model: str = Field("opendatalab/MinerU2.5-2509-1.2B", description="Model id or directory for the argv.")
    host: str = Field("127.0.0.1", description="Host the engine binds.")
    port: int = Field(30000, ge=1, le=65535, description="Port the engine binds.")

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_alias(cls, value: object) -> object:
        return _DTYPE_ALIASES.get(str(value).lower(), str(value).lower()) if value is not None else value

    @field_validator("mem_fraction_static", "gpu_memory_utilization")
    @classmethod
    def _fraction(cls, value: Optional[float]) -> Optional[float]:
        if value is not None and not 0 < value <= 1:
            raise ValueError(f"{value} is outside (0, 1] — a share of GPU memory, e.g. 0.5")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "PlanRequest":
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("--load-in-4bit and --load-in-8bit exclude each other — pick one")
        if (
            self.mem_fraction_static is not None
            and self.gpu_memory_utilization is not None
            and self.mem_fraction_static != self.gpu_memory_utilization
        ):
            raise ValueError(
                "--mem-fraction-static and --gpu-memory-utilization disagree — give one "
                "(the plan maps it to the engine's own flag)"
            )
        return self

    @property
    def memory_fraction(self) -> Optional[float]:
        """The user's memory share, whichever engine's name they used for it."""
        return self.mem_fraction_static if self.mem_fraction_static is not None else self.gpu_memory_utilization

    @property
    def forced_weight_bits(self) -> Optional[int]:
        return 4 if self.load_in_4bit else 8 if self.load_in_8bit else None


@dataclass(frozen=True)
class Hardware:
    """The device a plan is for, and the budget it may use there."""

    device: str  # cuda | cpu | mps
    name: str
    total_bytes: int
    free_bytes: int
    budget_bytes: int
    gpu_count: int = 1
    compute_capability: Optional[tuple[int, int]] = None
    budget_reason: str = ""
    hypothetical: bool = False  # a card from --vram, not one read from a machine

    @property
    def is_cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def supports_bf16(self) -> bool:
        # Unknown GPUs (a plan from --vram) are assumed modern; the plan says so in its notes.
        return self.device != "cuda" or self.compute_capability is None or self.compute_capability >= (8, 0)

    @property
    def supports_fp8(self) -> bool:
        return self.is_cuda and (self.compute_capability is None or self.compute_capability >= (8, 9))

    @classmethod
    def from_vram(cls, vram_gib: float, gpu_count: int = 1, virtual_vram_bytes: Optional[int] = None) -> "Hardware":
        """A hypothetical card of `vram_gib` GiB, all of it free; MINERU_VIRTUAL_VRAM_SIZE caps the budget
        as it does on a real card."""
        total = int(vram_gib * GIB)
        cards = f"{gpu_count} × " if gpu_count > 1 else ""
        budget, reason = total, f"--vram {vram_gib:g}: " + (f"each of {gpu_count} cards" if gpu_count > 1 else "the whole card")
        if virtual_vram_bytes is not None and virtual_vram_bytes < total:
            budget = virtual_vram_bytes
            reason = f"MINERU_VIRTUAL_VRAM_SIZE={virtual_vram_bytes / GIB:g} (below the {vram_gib:g} GiB card)"
        return cls(
            device="cuda",
            name=f"{cards}{vram_gib:g} GiB GPU",
            total_bytes=total,
            free_bytes=total,
            budget_bytes=budget,
            gpu_count=gpu_count,
            budget_reason=reason,
            hypothetical=True,
        )

    @classmethod
    def from_gpu(
        cls,
        *,
        name: str,
        total_bytes: int,
        free_bytes: int,
        gpu_count: int,
        compute_capability: Optional[tuple[int, int]],
        virtual_vram_bytes: Optional[int] = None,
    ) -> "Hardware":
        """A real (or recorded) GPU: the budget is what is free now, capped by MINERU_VIRTUAL_VRAM_SIZE."""
        held = total_bytes - free_bytes
        reason = f"free memory now ({gib(free_bytes)} of {gib(total_bytes)}"
        reason += f"; {gib(held)} held by the driver and other processes)" if held > 0.02 * total_bytes else ")"
        budget = free_bytes
        if virtual_vram_bytes is not None and virtual_vram_bytes < free_bytes:
            budget = virtual_vram_bytes
            reason = f"MINERU_VIRTUAL_VRAM_SIZE={virtual_vram_bytes / GIB:g} (below the {gib(free_bytes)} free)"
        return cls(
            device="cuda",
            name=name,
            total_bytes=total_bytes,
            free_bytes=free_bytes,
            budget_bytes=budget,
            gpu_count=gpu_count,
            compute_capability=compute_capability,
            budget_reason=reason,
        )

    @classmethod
    def cpu(cls, available_bytes: int, virtual_bytes: Optional[int] = None) -> "Hardware":
        """No GPU: the built-in engine runs on the CPU and RAM is the budget."""
        budget = min(available_bytes, virtual_bytes) if virtual_bytes else available_bytes
        return cls(
            device="cpu",
            name="CPU (no CUDA GPU found)",
            total_bytes=available_bytes,
            free_bytes=available_bytes,
            budget_bytes=budget,
            gpu_count=0,
            budget_reason="available RAM",
        )
