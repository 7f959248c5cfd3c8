"""Which flags each engine version has (engines/data/*.json), and fitting a plan's argv to one.

The plan's argv (planner/commands.py) is written for the newest version we hold. Here it is
checked against the version installed: a flag spelled differently there is renamed, a flag
that version lacks is refused before anything starts, with what to do instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata, resources
from typing import Mapping, Optional, Sequence

from packaging.version import InvalidVersion, Version

from mineru_fit.errors import EngineFlagError

ENGINE_NAMES = {"sglang": "SGLang", "vllm": "vLLM"}


@dataclass(frozen=True)
class FlagTable:
    """The flags one engine version accepts (those mineru-fit uses), and where the list was read."""

    engine: str
    version: str
    source: str
    flags: frozenset[str]
    env: frozenset[str]


@dataclass(frozen=True)
class EngineFlags:
    """Every version we hold for one engine, oldest first, and how names moved between them."""

    engine: str
    distribution: str
    tables: tuple[FlagTable, ...]
    renames: Mapping[str, tuple[str, ...]]
    alternatives: Mapping[str, str]

    @property
    def newest(self) -> FlagTable:
        return self.tables[-1]

    @property
    def oldest(self) -> FlagTable:
        return self.tables[0]

    def table_for(self, installed: Optional[str]) -> tuple[FlagTable, str]:
        """The table to check against for the installed version (None: not installed), and why."""
        name = ENGINE_NAMES[self.engine]
        if installed is None:
            return self.newest, (f"{name} is not installed here: flags checked against {self.newest.version}, "
                                 "the newest version we support")
        have = _version(installed)
        if have < _version(self.oldest.version):
            raise EngineFlagError(
                f"{name} {installed} is older than the oldest version we support ({self.oldest.version}) — "
                f"pip install -U '{self.distribution}>={self.oldest.version}'"
            )
        table = [t for t in self.tables if _version(t.version) <= have][-1]
        if have > _version(self.newest.version):
            return table, (f"{name} {installed} is newer than the newest version whose flags we hold "
                           f"({table.version}): checked against {table.version}")
        return table, f"{name} {installed} installed: flags checked against {table.version}"


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        # Local builds ("0.5.4+cu128.dirty") keep their release part.
        return Version(text.split("+")[0].split("-")[0])


@lru_cache(maxsize=None)
def load_flags(engine: str) -> EngineFlags:
    """The per-version flag data shipped in engines/data/<engine>.json."""
    text = resources.files("mineru_fit.engines").joinpath("data", f"{engine}.json").read_text()
    data = json.loads(text)
    tables = tuple(
        FlagTable(engine=engine, version=v["version"], source=v["source"],
                  flags=frozenset(v["flags"]), env=frozenset(v.get("env", ())))
        for v in sorted(data["versions"], key=lambda v: _version(v["version"]))
    )
    return EngineFlags(
        engine=engine,
        distribution=data["distribution"],
        tables=tables,
        renames={k: tuple(v) for k, v in data.get("renames", {}).items()},
        alternatives=dict(data.get("alternatives", {})),
    )


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def fit_argv(args: Sequence[str], table: FlagTable, flags: EngineFlags) -> tuple[list[str], list[str]]:
    """Rename flags this version spells differently; refuse one it lacks, naming the alternative.

    `args` are the engine's arguments after the launcher; values never start with "--".
    """
    name = ENGINE_NAMES[flags.engine]
    out: list[str] = []
    notes: list[str] = []
    for token in args:
        if not token.startswith("--") or token in table.flags:
            out.append(token)
            continue
        spelled = next((alt for alt in flags.renames.get(token, ()) if alt in table.flags), None)
        if spelled is not None:
            out.append(spelled)
            notes.append(f"{name} {table.version} spells {token} as {spelled}")
            continue
        instead = flags.alternatives.get(token, f"upgrade {name} (pip install -U {flags.distribution})")
        raise EngineFlagError(f"{name} {table.version} has no {token} — {instead}")
    return out, notes
