"""What a file is, from its first bytes (never from its name alone); pure."""

from __future__ import annotations

from pathlib import Path

from mineru_fit.errors import InputDocumentError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SUFFIXES = (".pdf", *IMAGE_SUFFIXES)
HEAD_BYTES = 1024


def kind_of(head: bytes) -> str | None:
    """'pdf', 'image' or None for the first bytes of a file."""
    if b"%PDF-" in head[:HEAD_BYTES]:
        return "pdf"  # PDF readers accept the header anywhere in the first KiB
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    return None


def _looks_like(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (an Office file?)"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data"
    return "text"


def sniff(path: Path) -> str:
    """The kind of a readable, non-empty file; InputDocumentError with what it is instead."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except IsADirectoryError as exc:
        raise InputDocumentError(f"{path} is a folder — pass its files, or the folder itself as an input") from exc
    except OSError as exc:
        raise InputDocumentError(f"{path} cannot be read ({exc.strerror or exc}) — check the path and permissions") from exc
    if not head:
        raise InputDocumentError(f"{path} is empty (0 bytes) — nothing to parse")
    kind = kind_of(head)
    if kind is not None:
        return kind
    if path.suffix.lower() == ".pdf":
        raise InputDocumentError(
            f"{path} is not a PDF: it has no %PDF- header and looks like {_looks_like(head)} — "
            "export it as PDF first"
        )
    raise InputDocumentError(
        f"{path} is {_looks_like(head)}, not a PDF, PNG, JPEG or WebP — convert it to one of those"
    )
