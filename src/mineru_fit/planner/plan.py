"""The Plan: a plain value with stable keys and a JSON round-trip."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

TERM_KEYS = ("weights", "kv_cache", "activations", "cuda_graphs", "runtime", "margin")


class DeviceSummary(BaseModel):
    """The device the plan was made for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(description="cuda, cpu or mps")
    name: str
    total_bytes: int
    free_bytes: int
    gpu_count: int
    compute_capability: Optional[tuple[int, int]] = None
    budget_reason: str = ""


class Plan(BaseModel):
    """What one engine at one level will use, term by term, and how to start it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str = Field(description="builtin, sglang, vllm, or flash (no model)")
    level: str = Field(description="none, basic, aggressive, extreme or flash")
    fits: bool = Field(description="predicted peak within the budget (less headroom) and no problem found")
    budget_bytes: int
    predicted_peak_bytes: int
    terms: dict[str, int] = Field(description="bytes per term; they sum to predicted_peak_bytes")
    kv_cache_tokens: int
    max_model_len: int
    max_image_pixels: int
    max_new_tokens: int
    batch_size: int = Field(description="requests decoded together (max running requests)")
    dtype: str
    weight_format: str = Field(description="none (compute dtype), int8, fp8 or nf4")
    kv_cache_dtype: str
    memory_fraction: Optional[float] = Field(
        None, description="the engine's share flag: --mem-fraction-static or --gpu-memory-utilization"
    )
    tp_size: int = 1
    dp_size: int = 1
    model: str
    device: DeviceSummary
    argv: list[str]
    env: dict[str, str]
    notes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list, description="what the plan gives up to fit, e.g. a smaller layout page for a short context"
    )
    problems: list[str] = Field(default_factory=list, description="why it does not fit, with what to change")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.model_validate_json(text)


class PlanReport(BaseModel):
    """Every level's plan for one engine, and the level `auto` picks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str
    chosen_level: str
    reason: str
    plan: Plan = Field(description="the chosen plan")
    levels: list[Plan] = Field(description="none, basic, aggressive, extreme, flash — in that order")
