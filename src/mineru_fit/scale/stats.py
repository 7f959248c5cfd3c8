"""Pages/s per engine actor (and for the flash CPU tasks together), for the summary; pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from mineru_fit.scale.stages import FLASH


@dataclass(frozen=True)
class ActorStat:
    label: str                       # node and device
    summary: str                     # the plan it ran (or why it could not)
    pages: int                       # page results it returned
    busy_s: float                    # seconds it spent on batches
    restarts: int = 0                # times Ray restarted it
    info: Optional[dict[str, Any]] = None  # the plan's numbers (level, batch, budget, device ...)

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.busy_s if self.busy_s > 0 else 0.0

    def line(self) -> str:
        restarts = f", restarted {self.restarts}×" if self.restarts else ""
        return f"{self.label}: {self.pages} page(s), {self.pages_per_s:.2f} pages/s{restarts} — {self.summary}"


def actor_stats(actors: dict[str, dict[str, Any]], counts: dict[str, int], wall_s: float) -> tuple[ActorStat, ...]:
    """One row per engine actor the registry knows; flash CPU tasks as one row over the run's wall time."""
    rows = [
        ActorStat(label=str(info.get("label", actor_id)), summary=str(info.get("summary", "")),
                  pages=int(info.get("pages", 0)), busy_s=float(info.get("busy_s", 0.0)),
                  restarts=max(0, int(info.get("starts", 1)) - 1), info=dict(info))
        for actor_id, info in sorted(actors.items(), key=lambda item: str(item[1].get("label", item[0])))
    ]
    if counts.get(FLASH):
        rows.append(ActorStat(label=FLASH, summary="docvortex, no model, no GPU", pages=counts[FLASH], busy_s=wall_s))
    return tuple(rows)
