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
            emit(PageOutput(PageRecord(page_idx=page_idx, tier="flash", ok=True, seconds=0.0, peak_memory_bytes=0),
                            model_blocks=()))
        else:
            fail(_failed(page_idx, NO_TEXT_LAYER if doc.kind == "pdf" else
                         "an image has no text layer: needs the vlm tier (download the model or pass --server)"))
    if not text_pages:
        return
    from docvortex.errors import DocumentError

    try:
        # analyze, not parse: the raw model pages are what a page checkpoint keeps, and the whole
        # document is post-processed at once when its files are written (joins across pages).
        analysis = docvortex.analyze(source, file_suffix="pdf", page_range=page_range(text_pages), parse_mode="txt")
    except DocumentError as exc:
        reason = NO_TEXT_LAYER if exc.code == "pdf_ocr_unsupported" else f"docvortex: {exc.message} ({exc.code})"
        for page_idx in text_pages:
            fail(_failed(page_idx, reason))
        return
    except Exception as exc:  # PDFium inside docvortex fails on what pypdfium2 could open: keep going
        for page_idx in text_pages:
            fail(_failed(page_idx, f"docvortex failed on this file: {type(exc).__name__}: {exc}"))
        return
    model = analysis.model_json
    broken = {d.page_index for d in analysis.diagnostics if d.code == "broken_page" and d.page_index is not None}
    by_index = dict(zip(model.resolved_page_indices, model.pages))
    share_s = (time.perf_counter() - started) / len(text_pages)
    for page_idx in text_pages:
        blocks = by_index.get(page_idx)
        if blocks is None or page_idx in broken:
            fail(_failed(page_idx, "docvortex could not load this page (broken page object)", share_s))
            continue
        record = PageRecord(page_idx=page_idx, tier="flash", ok=True, seconds=share_s, peak_memory_bytes=0,
                            blocks=len(blocks))
        emit(PageOutput(record, model_blocks=tuple(blocks)))
