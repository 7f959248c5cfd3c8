"""How many pages and requests may be in flight, adapted to memory pressure; no I/O."""

from __future__ import annotations

import asyncio
from typing import Any

# Pages that finish at a lowered limit before one more page may run at once again.
RECOVER_AFTER_PAGES = 8


class PageLimit:
    """Pages in flight: starts at the plan's batch size, halves on pressure, creeps back after successes."""

    def __init__(self, start: int) -> None:
        self.start = max(1, start)
        self.pages = self.start
        self._successes = 0

    def reset(self, start: int) -> None:
        self.__init__(start)  # type: ignore[misc]

    def pressure(self, launched_at: int) -> bool:
        """A page launched when the limit was `launched_at` hit memory pressure: halve.

        Returns True at the floor (it already ran alone): halving cannot help any more. Pages
        launched together that fail together halve the limit once, not once each."""
        if launched_at <= 1:
            return True
        lowered = max(1, launched_at // 2)
        if lowered < self.pages:
            self.pages = lowered
            self._successes = 0
        return False

    def success(self) -> None:
        if self.pages >= self.start:
            return
        self._successes += 1
        if self._successes >= RECOVER_AFTER_PAGES:
            self.pages += 1
            self._successes = 0


class Throttle:
    """An asyncio semaphore whose size can change: MinerU's client holds it around each request."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0
        self._changed = asyncio.Condition()

    async def resize(self, limit: int) -> None:
        async with self._changed:
            self.limit = max(1, limit)
            self._changed.notify_all()

    async def __aenter__(self) -> "Throttle":
        async with self._changed:
            await self._changed.wait_for(lambda: self.active < self.limit)
            self.active += 1
        return self

    async def __aexit__(self, *exc: Any) -> None:
        async with self._changed:
            self.active -= 1
            self._changed.notify_all()
