"""From the paths a user typed to the files to parse, each with a unique output name; pure but for stat."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from mineru_fit.parsing.providers.sniff import SUFFIXES


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str                      # output folder and file stem: <out>/<name>/<tier>/<name>.md
    error: Optional[str] = None    # set when the path cannot be an input at all


def discover(paths: Sequence[Path]) -> list[InputFile]:
    """Files as given and the PDFs/images inside given folders (not recursive), in a stable order.

    A folder's other files are left alone; a missing path becomes an InputFile with an error so
    the other inputs still run."""
    found: list[tuple[Path, Optional[str]]] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            members = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not members:
                found.append((path, f"{path} holds no PDF, PNG, JPEG or WebP files"))
            found += [(p, None) for p in members]
        elif path.exists():
            found.append((path, None))
        else:
            found.append((path, f"{path} does not exist — check the path"))
    files: list[InputFile] = []
    used: dict[str, int] = {}
    for path, error in found:
        key = path.resolve() if error is None else path
        if key in seen:
            continue
        seen.add(key)
        stem = path.stem or path.name or "document"
        count = used.get(stem.lower(), 0) + 1
        used[stem.lower()] = count
        # Two inputs named alike (a/x.pdf, b/x.pdf) must not share an output folder.
        files.append(InputFile(path, stem if count == 1 else f"{stem}_{count}", error))
    return files
