"""The flash tier: docvortex's model-free extraction of born-digital PDFs (0 GB of GPU memory).

Pages without a text layer are reported as needing the vlm tier, not emitted empty. docvortex
renders figure crops in a process pool started with `spawn`: the code that calls this must be
importable by a fresh interpreter (the console script and pytest are; a script needs a
`if __name__ == "__main__":` guard).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Union

from mineru_fit.errors import InputDocumentError, MissingExtraError
from mineru_fit.parsing.builders.flash_blocks import image_paths, page_items
from mineru_fit.parsing.renderers.markdown import render_markdown
from mineru_fit.parsing.results import PageOutput, PageRecord

logger = logging.getLogger(__name__)

NO_TEXT_LAYER = "no text layer: needs the vlm tier (a scanned page; flash reads only text that is in the PDF)"


def _docvortex() -> Any:
    try:
        import docvortex
    except ImportError as exc:
        raise MissingExtraError("docvortex", "flash") from exc
    return docvortex


def page_range(indices: list[int]) -> str:
    """0-based indices as docvortex's 1-based range text ('1-3,7')."""
    parts: list[str] = []
    start = prev = indices[0]
    for index in indices[1:] + [None]:  # type: ignore[list-item]
        if index is not None and index == prev + 1:
            prev = index
            continue
        parts.append(str(start + 1) if start == prev else f"{start + 1}-{prev + 1}")
        if index is not None:
            start = prev = index
    return ",".join(parts)


def _failed(page_idx: int, error: str, seconds: float = 0.0) -> PageRecord:
    return PageRecord(page_idx=page_idx, tier="flash", ok=False, seconds=seconds, error=error)


def _page_markdown(docvortex: Any, middle: Any, page: Any, assets: Any, items: list[dict[str, Any]]) -> str:
    """docvortex's own Markdown for one page; ours from the items if its renderer refuses the page."""
    try:
        one = middle.model_copy(update={"pages": [page]})
        return docvortex.render_artifact(one, "markdown", assets=assets).content.decode("utf-8")
    except Exception as exc:  # a renderer bug must not cost the page: the items are already built
        logger.info("docvortex could not render page %d as Markdown (%s): using ours", page.page_idx + 1, exc)
        return render_markdown(items)


def parse_flash(source: Union[Path, bytes], doc: Any, pages: list[int],
                emit: Callable[[PageOutput], None], fail: Callable[[PageRecord], None]) -> None:
    """Parse `pages` (0-based) of one open document; each converted page goes to `emit`, each failed one to `fail`."""
    docvortex = _docvortex()
    started = time.perf_counter()
    text_pages: list[int] = []
    for page_idx in pages:
        try:
            layer = doc.text_layer(page_idx) if doc.kind == "pdf" else "image_only"
        except InputDocumentError as exc:
            fail(_failed(page_idx, str(exc)))
            continue
        if layer == "text":
            text_pages.append(page_idx)
        elif layer == "empty":  # a blank page is converted: it holds nothing
            emit(PageOutput(PageRecord(page_idx=page_idx, tier="flash", ok=True, seconds=0.0, peak_memory_bytes=0)))
        else:
            fail(_failed(page_idx, NO_TEXT_LAYER if doc.kind == "pdf" else
                         "an image has no text layer: needs the vlm tier (download the model or pass --server)"))
    if not text_pages:
        return
    from docvortex.errors import DocumentError

    try:
        result = docvortex.parse(source, file_suffix="pdf", page_range=page_range(text_pages), parse_mode="txt")
    except DocumentError as exc:
        reason = NO_TEXT_LAYER if exc.code == "pdf_ocr_unsupported" else f"docvortex: {exc.message} ({exc.code})"
        for page_idx in text_pages:
            fail(_failed(page_idx, reason))
        return
    except Exception as exc:  # PDFium inside docvortex fails on what pypdfium2 could open: keep going
        for page_idx in text_pages:
            fail(_failed(page_idx, f"docvortex failed on this file: {type(exc).__name__}: {exc}"))
        return
    middle, assets = result.middle_json, result.assets
    share_s = (time.perf_counter() - started) / len(text_pages)
    by_index = {page.page_idx: page for page in middle.pages}
    for page_idx in text_pages:
        page = by_index.get(page_idx)
        if page is None:
            fail(_failed(page_idx, "docvortex could not load this page (broken page object)", share_s))
            continue
        built = time.perf_counter()
        try:
            items = page_items(page.model_dump(mode="json", by_alias=True, exclude_none=True))
        except Exception as exc:  # docvortex output we do not understand costs this page, not the file
            fail(_failed(page_idx, f"could not convert docvortex's page: {type(exc).__name__}: {exc}", share_s))
            continue
        markdown = _page_markdown(docvortex, middle, page, assets, items)
        images = tuple((rel, assets[rel]) for rel in image_paths(items) if rel in assets)
        record = PageRecord(page_idx=page_idx, tier="flash", ok=True, seconds=share_s + time.perf_counter() - built,
                            peak_memory_bytes=0, blocks=len(items))
        emit(PageOutput(record, tuple(items), markdown, images))
