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


# The 8 GB line is the guide's own command (`mineru-sglang-server --mem-fraction-static 0.3
# --load-in-4bit --max-model-len 2048`). The larger cards follow the guide's pattern of a
# larger share, lighter quantization and a longer context per step up in memory.
GUIDE_PROFILES: tuple[GuideProfile, ...] = (
    GuideProfile(8, 0.3, 2048, load_in_4bit=True, source="the guide's command"),
    GuideProfile(12, 0.4, 4096, load_in_8bit=True, source="the guide's pattern"),
    GuideProfile(16, 0.5, 8192, source="the guide's pattern"),
    GuideProfile(24, 0.7, 16384, source="the guide's pattern"),
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
