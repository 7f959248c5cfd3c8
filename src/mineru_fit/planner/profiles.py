"""The guide's per-card profiles, as data, and what the planner makes of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mineru_fit.models.spec import ModelSpec
from mineru_fit.planner.core import make_report, plan_levels
from mineru_fit.planner.inputs import Hardware, PlanRequest
from mineru_fit.planner.plan import Plan


@dataclass(frozen=True)
class GuideProfile:
    """One row of the guide: a card size and the server flags it recommends for it."""

    vram_gib: int
    mem_fraction_static: float
    max_model_len: int
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    source: str = ""

    @property
    def flags(self) -> str:
        quant = " --load-in-4bit" if self.load_in_4bit else " --load-in-8bit" if self.load_in_8bit else ""
        return f"--mem-fraction-static {self.mem_fraction_static}{quant} --max-model-len {self.max_model_len}"

    @property
    def short_flags(self) -> str:
        quant = "4-bit" if self.load_in_4bit else "8-bit" if self.load_in_8bit else "16-bit"
        return f"{self.mem_fraction_static} · {quant} · {self.max_model_len}"


# The guide's "针对不同显存大小的优化策略" section, line by line (tests/guide/GUIDE.md).
GUIDE_PROFILES: tuple[GuideProfile, ...] = (
    GuideProfile(8, 0.4, 1024, load_in_4bit=True, source="the guide's 8 GB command"),
    GuideProfile(12, 0.5, 2048, load_in_8bit=True, source="the guide's 12 GB command"),
    GuideProfile(16, 0.6, 4096, load_in_8bit=True, source="the guide's 16 GB command"),
    GuideProfile(24, 0.8, 8192, source="the guide's 24 GB+ command"),
)


@dataclass(frozen=True)
class ProfileCheck:
    profile: GuideProfile
    guide_plan: Plan   # the guide's flags on SGLang, as the planner predicts them
    auto_plan: Plan    # what `auto` picks for the same card and engine


def check_profiles(spec: ModelSpec, engine: str = "sglang", model: Optional[str] = None) -> list[ProfileCheck]:
    """Each guide profile beside the planner's own choice for that card."""
    checks = []
    for profile in GUIDE_PROFILES:
        hw = Hardware.from_vram(profile.vram_gib)
        extra = {"model": model} if model else {}
        guide_request = PlanRequest(
            engine=engine, level="none", mem_fraction_static=profile.mem_fraction_static,
            max_model_len=profile.max_model_len, load_in_4bit=profile.load_in_4bit,
            load_in_8bit=profile.load_in_8bit, **extra,
        )
        guide_plan = plan_levels(spec, hw, guide_request)[0]
        auto_plan = make_report(spec, hw, PlanRequest(engine=engine, **extra)).plan
        checks.append(ProfileCheck(profile, guide_plan, auto_plan))
    return checks
