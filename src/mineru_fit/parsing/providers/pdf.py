"""PDFs through pypdfium2: open (with a password), count, render at a DPI, check the text layer.

PDFium is not thread-safe: callers keep every call on one thread (the VLM tier renders on a
single worker thread; the flash tier runs in the caller's thread).
"""

from __future__ import annotations

import io
import logging
import math
import re
from pathlib import Path
from typing import Any, Optional, Union

from mineru_fit.errors import InputDocumentError, MissingExtraError

logger = logging.getLogger(__name__)

# A page rendered larger than this is rendered at a lower DPI: a poster at 200 DPI would be
# hundreds of megapixels, and MinerU resizes every page to ~1 MP for layout anyway.
MAX_RENDER_PIXELS = 40_000_000
# How much of a PDF that PDFium refused is read to say why (encryption dictionary, empty page tree).
MAX_SCAN_BYTES = 64 * 1024 * 1024
_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?!s)\b")


def _pdfium() -> Any:
    try:
        import pypdfium2
    except ImportError as exc:
        raise MissingExtraError("pypdfium2", "flash") from exc
    return pypdfium2


class PdfDocument:
    """An open PDF. `text_layer` and `render` take 0-based page indices."""

    kind = "pdf"

    def __init__(self, path: Path, password: Optional[str] = None) -> None:
        pdfium = _pdfium()
        self.path = path
        self.password = password
        try:
            self._doc = pdfium.PdfDocument(str(path), password=password)
        except pdfium.PdfiumError as exc:
            raise _open_error(path, password, exc) from exc
        self.encrypted = password is not None
        self.page_count = len(self._doc)
        if self.page_count == 0:
            self.close()
            raise InputDocumentError(f"{path} has no pages — nothing to parse")

    def close(self) -> None:
        if getattr(self, "_doc", None) is not None:
            self._doc.close()
            self._doc = None

    def __enter__(self) -> "PdfDocument":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _page(self, index: int) -> Any:
        try:
            return self._doc[index]
        except Exception as exc:  # PDFium fails per page on broken page objects
            raise InputDocumentError(f"page {index + 1} of {self.path} cannot be loaded ({exc})") from exc

    def text_layer(self, index: int) -> str:
        """'text' when the page has characters, 'image_only' for a scan, 'empty' for a blank page."""
        import pypdfium2.raw as pdfium_c

        page = self._page(index)
        try:
            textpage = page.get_textpage()
            try:
                chars = textpage.count_chars()
            finally:
                textpage.close()
            if chars > 0:
                return "text"
            images = page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=3)
            return "image_only" if next(iter(images), None) is not None else "empty"
        finally:
            page.close()

    def render(self, index: int, dpi: int) -> Any:
        """The page as an RGB PIL image at `dpi`, lowered so it stays under MAX_RENDER_PIXELS."""
        page = self._page(index)
        try:
            width_pt, height_pt = page.get_size()
            scale = dpi / 72
            pixels = width_pt * height_pt * scale * scale
            if pixels > MAX_RENDER_PIXELS:
                scale *= math.sqrt(MAX_RENDER_PIXELS / pixels)
                logger.info("page %d of %s is large: rendered at %.0f DPI", index + 1, self.path, scale * 72)
            # convert() copies the pixels out of PDFium's buffer, which is freed with the bitmap.
            return page.render(scale=scale).to_pil().convert("RGB")
        finally:
            page.close()

    def source_for_flash(self) -> Union[Path, bytes]:
        """The path, or for an encrypted PDF a decrypted copy in memory (docvortex takes no password)."""
        if not self.encrypted:
            return self.path
        import pypdfium2.raw as pdfium_c

        buffer = io.BytesIO()
        self._doc.save(buffer, flags=pdfium_c.FPDF_REMOVE_SECURITY)
        return buffer.getvalue()


def _open_error(path: Path, password: Optional[str], exc: Exception) -> InputDocumentError:
    # PDFium's last-error code can be stale (left by an earlier document), so the bytes decide.
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SCAN_BYTES)
    except OSError:
        data = b""
    if b"/Encrypt" in data:
        if password is None:
            return InputDocumentError(f"{path} is encrypted — pass its password with --password")
        return InputDocumentError(f"{path}: the password given with --password does not open it — check it")
    if re.search(rb"/Count\s+0\b", data) and not _PAGE_OBJECT.search(data):
        return InputDocumentError(f"{path} has no pages — nothing to parse")
    return InputDocumentError(f"{path} is corrupt or not a readable PDF ({exc}) — re-export or repair it")
