"""The run's registry: one small Ray actor that every engine actor reports to, and the driver reads.

An engine actor registers when it starts (and again each time Ray restarts it): the registry
answers how often it has started before and which pages were in flight when it died, so the
restarted actor runs one level lower and counts those pages' retries. Plans, step-downs and
GPU memory flow through here to the driver's one progress bar. Plain Python: run.py makes it
a Ray actor.
"""

from __future__ import annotations

import time
from typing import Any

PageKey = tuple[int, int]  # (file number, 0-based page)


class Registry:
    def __init__(self) -> None:
        self.actors: dict[str, dict[str, Any]] = {}
        self.in_flight: dict[str, list[PageKey]] = {}
        self.crashes: dict[PageKey, int] = {}
        self.events: list[str] = []
        self.memory: dict[str, int] = {}

    def register(self, actor_id: str, where: dict[str, Any]) -> tuple[int, dict[PageKey, int]]:
        """(times this actor started before, {page: deaths it was in flight for}) for the pages it lost."""
        entry = self.actors.setdefault(actor_id, {"starts": 0, **where})
        restarts = entry["starts"]
        entry.update(where, starts=restarts + 1, started_at=time.time())
        lost = self.in_flight.pop(actor_id, [])
        for key in lost:
            self.crashes[key] = self.crashes.get(key, 0) + 1
        if restarts:
            self.events.append(f"{entry.get('label', actor_id)} died and was restarted by Ray (restart {restarts}); "
                               f"{len(lost)} page(s) it had in flight are retried one level lower")
        return restarts, {key: self.crashes[key] for key in lost}

    def planned(self, actor_id: str, info: dict[str, Any]) -> None:
        self.actors.setdefault(actor_id, {"starts": 1}).update(info)
        self.events.append(f"{info.get('label', actor_id)}: {info.get('summary', '')}")

    def begin(self, actor_id: str, keys: list[PageKey]) -> None:
        self.in_flight[actor_id] = list(keys)

    def end(self, actor_id: str, pages: int, busy_s: float) -> None:
        """A batch is back: its pages are no longer at risk, and count towards the actor's pages/s."""
        self.in_flight.pop(actor_id, None)
        entry = self.actors.setdefault(actor_id, {"starts": 1})
        entry["pages"] = entry.get("pages", 0) + pages
        entry["busy_s"] = entry.get("busy_s", 0.0) + busy_s

    def event(self, actor_id: str, text: str) -> None:
        label = self.actors.get(actor_id, {}).get("label", actor_id)
        self.events.append(f"{label}: {text}")

    def gpu_memory(self, actor_id: str, used_bytes: int) -> None:
        self.memory[actor_id] = used_bytes

    def read(self, since: int) -> dict[str, Any]:
        """Everything the driver shows: actors, events after the first `since`, GPU memory in use in all."""
        return {"actors": {k: dict(v) for k, v in self.actors.items()}, "events": self.events[since:],
                "next": len(self.events), "memory": sum(self.memory.values()) if self.memory else None}
