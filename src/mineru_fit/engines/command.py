"""The exact command an engine is started with: the plan's argv fitted to the installed version."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional


@dataclass(frozen=True)
class EngineCommand:
    """argv and the environment we set on top of the inherited one; notes say what was adapted."""

    engine: str
    level: str
    flag_version: str              # the version whose flag list the argv was checked against
    installed_version: Optional[str]
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 30000
    notes: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        # A server bound to every interface is reached on the loopback.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def health_url(self) -> str:
        return self.base_url + "/health"

    @property
    def metrics_url(self) -> str:
        return self.base_url + "/metrics"

    def shell_line(self) -> str:
        """One line a shell runs as is: VAR=value ... argv."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)


def option_value(argv: tuple[str, ...] | list[str], flag: str) -> Optional[str]:
    """The value after `flag` in argv, if present."""
    for i, token in enumerate(argv[:-1]):
        if token == flag:
            return argv[i + 1]
    return None
