"""The files of one document, assembled from its pages.

MinerU 4's (when every converted page carries docvortex model blocks): `<name>.md` (its Markdown),
`<name>_middle.json`, `<name>_structured_content.json`, `<name>_content_list.json` and the images
under `images/`; ours beside them: `<name>_pages.json`. Without docvortex (Python 3.10, no flash
extra) the older per-page Markdown and content_list are written instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from mineru_fit.parsing.fsio import write_bytes_atomic, write_json_atomic, write_text_atomic
from mineru_fit.parsing.renderers import mineru4
from mineru_fit.parsing.results import PageOutput, PageRecord

SUFFIXES = mineru4.SUFFIXES


def markdown_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}.md"


def write_document(out_dir: Path, name: str, converted: Iterable[PageOutput], failed: Iterable[PageRecord]) -> Path:
    """Write the document's files in page order; a failed page leaves a visible mark in the Markdown."""
    pages = sorted(converted, key=lambda p: p.record.page_idx)
    lost = sorted(failed, key=lambda r: r.page_idx)
    records = sorted([p.record for p in pages] + lost, key=lambda r: r.page_idx)
    write_json_atomic(out_dir / f"{name}_pages.json", [r.to_dict() for r in records])
    tier = records[0].tier if records else "flash"
    if pages and all(p.model_blocks is not None for p in pages) and mineru4.available():
        _write_mineru4(out_dir, name, pages, lost, tier)
    else:
        _write_per_page(out_dir, name, pages, lost)
    return markdown_path(out_dir, name)


def _write_mineru4(out_dir: Path, name: str, pages: list[PageOutput], lost: list[PageRecord], tier: str) -> None:
    outputs = mineru4.build_outputs([(p.record.page_idx, list(p.model_blocks or ())) for p in pages], tier=tier,
                                    missing={r.page_idx: r.error or "not converted" for r in lost})
    for rel, data in outputs.assets.items():  # images first: the files that name them are written after
        write_bytes_atomic(out_dir / rel, data)
    write_text_atomic(out_dir / f"{name}_middle.json", outputs.middle_json)
    write_text_atomic(out_dir / f"{name}_structured_content.json", outputs.structured_content)
    write_text_atomic(out_dir / f"{name}_content_list.json",
                      json.dumps(outputs.content_list, ensure_ascii=False, indent=2))
    write_text_atomic(markdown_path(out_dir, name), outputs.markdown)


def _write_per_page(out_dir: Path, name: str, pages: list[PageOutput], lost: list[PageRecord]) -> None:
    by_page: dict[int, object] = {p.record.page_idx: p for p in pages}
    by_page.update({r.page_idx: r for r in lost})
    blocks: list[str] = []
    items: list[dict] = []
    for page_idx in sorted(by_page):
        entry = by_page[page_idx]
        if isinstance(entry, PageOutput):
            items.extend(entry.items)
            if entry.markdown.strip():
                blocks.append(entry.markdown.strip())
        else:
            assert isinstance(entry, PageRecord)
            # Never drop a page silently: the Markdown says where a page is missing and why.
            blocks.append(f"<!-- page {page_idx + 1} not converted: {entry.error} -->")
    write_text_atomic(markdown_path(out_dir, name), "\n\n".join(blocks) + "\n")
    write_json_atomic(out_dir / f"{name}_content_list.json", items)
