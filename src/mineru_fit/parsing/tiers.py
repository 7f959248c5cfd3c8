"""Which tier parses: vlm (MinerU2.5) or flash (docvortex, no model), and why; pure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mineru_fit.errors import UsageError

TIERS = ("auto", "vlm", "flash")


@dataclass(frozen=True)
class TierChoice:
    tier: str     # vlm | flash
    reason: str


def choose_tier(requested: str, *, server_url: Optional[str], model_dir: Optional[Path], model_name: str,
                plan_level: Optional[str], plan_reason: str = "") -> TierChoice:
    """auto: vlm when a model is reachable (--server, or weights here and a level that fits), else flash."""
    if requested not in TIERS:
        raise UsageError(f"--tier {requested}: use auto, vlm or flash")
    if requested == "flash":
        if server_url:
            raise UsageError("--tier flash uses no model: drop --server, or use --tier vlm")
        return TierChoice("flash", "asked for with --tier flash")
    if server_url:
        return TierChoice("vlm", f"--server {server_url}: MinerU2.5 two-step extraction through that endpoint")
    if model_dir is None:
        if requested == "vlm":
            raise UsageError(
                f"--tier vlm needs the model and {model_name} is not downloaded — run `mineru-fit models download`, "
                "pass --model DIR, or --server URL"
            )
        return TierChoice("flash", f"no MinerU2.5 model here ({model_name} is not downloaded; "
                                   "`mineru-fit models download` fetches it): flash needs none, for born-digital PDFs")
    if requested == "vlm":
        return TierChoice("vlm", f"asked for with --tier vlm; in-process on the built-in engine at level {plan_level}")
    if plan_level is None or plan_level == "flash":
        return TierChoice("flash", f"{model_name} is here but no level fits the memory budget ({plan_reason}): "
                                   "flash needs no GPU memory")
    return TierChoice("vlm", f"{model_name} found at {model_dir}; level {plan_level} fits ({plan_reason})")
