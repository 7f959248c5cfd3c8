"""The advisor: every rule over a snapshot and its history, most urgent advice first.

A rule is a pure function (snapshot, history, context) -> list[Advice]; RULES keeps their order
as data, so adding one is one line and each can be tested alone.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from mineru_fit.monitor import rules_engine, rules_memory
from mineru_fit.monitor.advice import SEVERITIES, Advice, AdvisorContext
from mineru_fit.monitor.snapshot import Snapshot

Rule = Callable[[Snapshot, Sequence[Snapshot], AdvisorContext], list[Advice]]

RULES: dict[str, Rule] = {
    "kv-headroom": rules_memory.kv_headroom,
    "co-tenant": rules_memory.co_tenant,
    "near-limit": rules_memory.near_limit,
    "gpu-hot": rules_memory.hot_gpu,
    "cuda-launch-blocking": rules_engine.launch_blocking,
    "queue-with-room": rules_engine.queue_with_room,
    "oom-events": rules_engine.oom_events,
    "engine-unreachable": rules_engine.unreachable,
}


def advise(snapshot: Snapshot, history: Sequence[Snapshot] = (), ctx: Optional[AdvisorContext] = None) -> list[Advice]:
    """Every rule's advice for this moment, critical first; `history` is earlier snapshots, oldest first."""
    context = ctx or AdvisorContext()
    found = [advice for rule in RULES.values() for advice in rule(snapshot, history, context)]
    return sorted(found, key=lambda a: SEVERITIES.index(a.severity))
