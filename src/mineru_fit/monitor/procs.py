"""Processes as /proc tells them: parents, owners, users. Reads at the edge, matching is pure.

Engines often hold GPU memory in a child (vLLM's EngineCore, SGLang's scheduler), so a GPU
process belongs to one of our engines when the engine's pid is the process or an ancestor.
"""

from __future__ import annotations

import pwd
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from mineru_fit.monitor.snapshot import EngineTag
from mineru_fit.runrecords import RunRecord

PROC = Path("/proc")
# Deeper than any launcher chain we start (supervisor -> engine -> worker), shallow enough to be cheap.
_MAX_DEPTH = 32


def parent_pid(pid: int, proc_root: Path = PROC) -> Optional[int]:
    """The parent's pid, or None when the process is gone or not ours to see."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def ancestry(pid: int, proc_root: Path = PROC) -> tuple[int, ...]:
    """The pid and its ancestors, nearest first (init excluded)."""
    chain = [pid]
    while len(chain) < _MAX_DEPTH:
        parent = parent_pid(chain[-1], proc_root)
        if parent is None or parent <= 1 or parent in chain:
            break
        chain.append(parent)
    return tuple(chain)


def all_parents(proc_root: Path = PROC) -> dict[int, int]:
    """pid -> parent pid for every process visible now."""
    parents: dict[int, int] = {}
    try:
        entries = list(proc_root.iterdir())
    except OSError:
        return parents
    for entry in entries:
        if entry.name.isdigit():
            parent = parent_pid(int(entry.name), proc_root)
            if parent is not None:
                parents[int(entry.name)] = parent
    return parents


def descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    """`root` and every process below it, from a pid -> parent map."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found = {root}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def process_user(pid: int, proc_root: Path = PROC) -> str:
    """The user name owning a process ("" when unknown; the uid when it has no name)."""
    try:
        for line in (proc_root / str(pid) / "status").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
                break
        else:
            return ""
    except (OSError, ValueError, IndexError):
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def process_environ(pid: int, keys: Iterable[str], proc_root: Path = PROC) -> dict[str, str]:
    """The given variables from a process's environment ({} when it is not ours to read)."""
    try:
        raw = (proc_root / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    wanted = set(keys)
    found: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode("utf-8", errors="replace").partition("=")
        if sep and key in wanted:
            found[key] = value
    return found


def owner_of(ancestors: Sequence[int], records: Iterable[RunRecord]) -> Optional[EngineTag]:
    """The engine whose pid (or supervisor's) is the process or its nearest ancestor."""
    by_pid: dict[int, RunRecord] = {}
    for record in records:
        by_pid.setdefault(record.pid, record)
        if record.supervisor_pid is not None:
            by_pid.setdefault(record.supervisor_pid, record)
    for pid in ancestors:
        record = by_pid.get(pid)
        if record is not None:
            return EngineTag(engine=record.engine, level=record.level, pid=record.pid, base_url=record.base_url)
    return None
