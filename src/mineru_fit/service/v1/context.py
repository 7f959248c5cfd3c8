"""What every /v1 route shares: the service core, the /v1 store and the job translator."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from mineru_fit.service.core import ServiceCore
from mineru_fit.service.v1.jobs import V1Jobs, iso
from mineru_fit.service.v1.store import V1Store


@dataclass
class V1Context:
    core: ServiceCore
    started: int = field(default_factory=lambda: int(time.time()))
    _store: Optional[V1Store] = None

    @property
    def store(self) -> V1Store:
        """Opened on first use, beside the core's data (the core creates its folder when it starts)."""
        if self._store is None:
            self._store = V1Store(self.core.config.data_dir / "v1")
        return self._store

    def core_jobs(self) -> set[str]:
        """The ids of every job the core holds (the core must be running)."""
        if self.core.store is None:
            raise RuntimeError("the service core is not started")
        return self.core.store.ids()

    @property
    def jobs(self) -> V1Jobs:
        return V1Jobs(self.core, self.store)

    @property
    def started_iso(self) -> str:
        return iso(self.started) or ""

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
