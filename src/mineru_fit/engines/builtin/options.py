"""What the built-in engine is started with: the plan's numbers plus where to listen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mineru_fit.planner.plan import Plan


@dataclass(frozen=True)
class BuiltinOptions:
    model: str                          # a local model directory, or a hub id found by models.where
    host: str = "127.0.0.1"
    port: int = 30000
    level: str = "basic"
    device: str = "cuda"                # cuda, cuda:N, cpu, mps
    dtype: str = "bfloat16"
    max_model_len: int = 8192
    max_batch_size: int = 8
    max_image_pixels: int = 1605632
    max_new_tokens: int = 6112          # the output cap a request without max_tokens gets
    mem_fraction_static: Optional[float] = None  # cap of the caching allocator, share of total
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    served_model_name: Optional[str] = None
    allow_remote_images: bool = False
    batch_wait_ms: float = 10.0         # how long the batcher waits to fill a batch
    # Larger images are refused from their header, before decoding; None: derived from
    # max_image_pixels (limits.RequestLimits).
    max_input_pixels: Optional[int] = None

    @classmethod
    def from_plan(cls, plan: Plan, model: str, **overrides: object) -> "BuiltinOptions":
        """The options a builtin Plan implies; `overrides` (host, port, device, ...) win."""
        values: dict[str, object] = dict(
            model=model,
            level=plan.level,
            dtype=plan.dtype,
            max_model_len=plan.max_model_len,
            max_batch_size=plan.batch_size,
            max_image_pixels=plan.max_image_pixels,
            max_new_tokens=plan.max_new_tokens,
            mem_fraction_static=plan.memory_fraction,
            load_in_4bit=plan.weight_format == "nf4",
            load_in_8bit=plan.weight_format == "int8",
            device="cpu" if plan.device.device == "cpu" else "cuda",
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
