"""The files of one document, assembled from its pages: `<name>.md`, `_content_list.json`, `_pages.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mineru_fit.parsing.fsio import write_json_atomic, write_text_atomic
from mineru_fit.parsing.results import PageOutput, PageRecord


def markdown_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}.md"


def write_document(out_dir: Path, name: str, converted: Iterable[PageOutput], failed: Iterable[PageRecord]) -> Path:
    """Write the Markdown, content list and page table in page order; a failed page leaves a visible mark."""
    by_page: dict[int, object] = {p.record.page_idx: p for p in converted}
    by_page.update({r.page_idx: r for r in failed})
    blocks: list[str] = []
    items: list[dict] = []
    records: list[PageRecord] = []
    for page_idx in sorted(by_page):
        entry = by_page[page_idx]
        if isinstance(entry, PageOutput):
            records.append(entry.record)
            items.extend(entry.items)
            if entry.markdown.strip():
                blocks.append(entry.markdown.strip())
        else:
            assert isinstance(entry, PageRecord)
            records.append(entry)
            # Never drop a page silently: the Markdown says where a page is missing and why.
            blocks.append(f"<!-- page {page_idx + 1} not converted: {entry.error} -->")
    md = markdown_path(out_dir, name)
    write_text_atomic(md, "\n\n".join(blocks) + "\n")
    write_json_atomic(out_dir / f"{name}_content_list.json", items)
    write_json_atomic(out_dir / f"{name}_pages.json", [r.to_dict() for r in records])
    return md
