"""Per-page checkpoints: each finished page is on disk the moment it is done, so a rerun resumes.

`<out>/<name>/<tier>/.checkpoints/` holds `source.json` (what the pages were made from) and one
`page_NNNNN.json` per converted page; a page's images are written before its checkpoint, so a
checkpoint always points at files that exist. Failed pages get no checkpoint: a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Optional

from mineru_fit.parsing.fsio import write_bytes_atomic, write_json_atomic
from mineru_fit.parsing.results import PageOutput, PageRecord

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = ".checkpoints"
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(path: Path, **settings: Any) -> dict[str, Any]:
    """What decides a page's content: the input's bytes and the settings that change the output."""
    return {"size": path.stat().st_size, "sha256": file_sha256(path), **settings}


class PageStore:
    """The checkpoints of one input file in one output folder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.dir = out_dir / CHECKPOINT_DIR

    def prepare(self, source: dict[str, Any], *, force: bool) -> Optional[str]:
        """Drop checkpoints made from another input or with other settings (or all, with force).

        Returns a note when earlier work was thrown away."""
        note = None
        if force and self.dir.exists():
            shutil.rmtree(self.dir)
        elif self.dir.exists():
            previous = self._read(self.dir / "source.json")
            if previous != source:
                changed = sorted(k for k in set(previous or {}) | set(source) if (previous or {}).get(k) != source.get(k))
                note = f"checkpoints made from a different input or settings ({', '.join(changed)}): starting over"
                shutil.rmtree(self.dir)
        write_json_atomic(self.dir / "source.json", source)
        return note

    def done(self) -> dict[int, PageOutput]:
        """The pages converted by earlier runs, by page index."""
        pages: dict[int, PageOutput] = {}
        for path in sorted(self.dir.glob("page_*.json")):
            data = self._read(path)
            if not data:
                continue
            images = tuple((rel, b"") for rel in data.get("images", []))
            if not all((self.out_dir / rel).is_file() for rel, _ in images):
                continue  # an image went missing since: redo the page
            record = PageRecord.from_dict({**data["record"], "resumed": True})
            blocks = data.get("model_blocks")
            pages[record.page_idx] = PageOutput(record, tuple(data.get("items", [])), data.get("markdown", ""), images,
                                                tuple(blocks) if isinstance(blocks, list) else None)
        return pages

    def save(self, output: PageOutput) -> None:
        """Images first, then the checkpoint that names them; both atomic."""
        for rel, data in output.images:
            write_bytes_atomic(self.out_dir / rel, data)
        write_json_atomic(self.dir / f"page_{output.record.page_idx:05d}.json", {
            "record": output.record.to_dict(),
            "items": list(output.items),
            "markdown": output.markdown,
            "images": [rel for rel, _ in output.images],
            "model_blocks": list(output.model_blocks) if output.model_blocks is not None else None,
        })

    @staticmethod
    def _read(path: Path) -> Optional[dict[str, Any]]:
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.info("ignoring unreadable checkpoint %s: %s", path, exc)
            return None
        return value if isinstance(value, dict) else None
