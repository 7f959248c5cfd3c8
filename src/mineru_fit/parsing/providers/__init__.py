"""Providers read input files: PDFs through pypdfium2, images through PIL."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from mineru_fit.parsing.providers.image import ImageDocument
from mineru_fit.parsing.providers.pdf import PdfDocument
from mineru_fit.parsing.providers.sniff import IMAGE_SUFFIXES, SUFFIXES, sniff

Document = Union[PdfDocument, ImageDocument]


def open_document(path: Path, password: Optional[str] = None) -> Document:
    """Open a PDF or image by its content; InputDocumentError says what is wrong with it."""
    kind = sniff(path)
    if kind == "pdf":
        return PdfDocument(path, password)
    return ImageDocument(path)


__all__ = ["Document", "IMAGE_SUFFIXES", "ImageDocument", "PdfDocument", "SUFFIXES", "open_document"]
