"""`parse -f FORMAT`: one of MinerU 4's outputs written where `-o` says, as `mineru-kit parse` places it.

`-o x.md` (a name with a suffix) is that file, for one input; `-o DIR` gets `DIR/<name>.<ext>` per input.
The full folder layout (with the page checkpoints that make a rerun resume) is kept in `.mineru-fit/` beside.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Optional

from mineru_fit.errors import UsageError
from mineru_fit.parsing.renderers.mineru4 import SUFFIXES, inline_markdown, write_zip

FORMATS = ("markdown", "middle_json", "structured_content", "zip")
# mineru-kit's file extensions (it has no structured_content; ours says what the file holds).
EXTENSIONS = {"markdown": ".md", "middle_json": ".json", "structured_content": ".structured_content.json", "zip": ".zip"}
WORK_DIR = ".mineru-fit"


def plan_export(output: Path, fmt: str, inputs: list[Path]) -> tuple[Path, Callable[[str], Path]]:
    """(the folder the parse writes into, name -> the file `fmt` goes to)."""
    if fmt not in FORMATS:
        raise UsageError(f"-f {fmt}: use one of {', '.join(FORMATS)}")
    if output.suffix and not output.is_dir():
        if len(inputs) != 1 or inputs[0].is_dir():
            raise UsageError(f"-o {output} names one file: parse one input, or give -o a folder")
        return output.parent / WORK_DIR, lambda _name: output
    return output / WORK_DIR, lambda name: output / f"{name}{EXTENSIONS[fmt]}"


def export(folder: Path, name: str, fmt: str, dest: Path) -> Optional[Path]:
    """Write `fmt` of the document parsed into `folder` to `dest` (None: the parse wrote no such output)."""
    if not (folder / f"{name}{SUFFIXES['middle_json']}").is_file():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "zip":
        return write_zip(folder, name, dest)
    if fmt == "markdown":
        dest.write_text(inline_markdown(folder, name), encoding="utf-8")
        return dest
    shutil.copyfile(folder / f"{name}{SUFFIXES[fmt]}", dest)
    return dest
