"""The CPU stages of the pipeline, as Ray Data runs them: render pages, run the flash tier; and the
rows they pass on. Each is a plain function over a batch (a dict of columns), so it runs on any node.

A page's result travels as one pickled column (a PageOutput or a failed PageRecord): content
list items differ in keys from block to block, which Arrow would otherwise widen with nulls.
Input files are opened by path on the node that runs the task: every node must see them.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from mineru_fit.errors import InputDocumentError
from mineru_fit.parsing.results import PageOutput, PageRecord

Result = Union[PageOutput, PageRecord]
FLASH = "flash (CPU task)"


def result_rows(results: Iterable[tuple[int, Result]], actor: str) -> dict[str, list[Any]]:
    """Rows of (file number, page, who ran it, the pickled result)."""
    rows: dict[str, list[Any]] = {"file_no": [], "page_idx": [], "actor": [], "payload": []}
    for file_no, result in results:
        record = result.record if isinstance(result, PageOutput) else result
        rows["file_no"].append(file_no)
        rows["page_idx"].append(record.page_idx)
        rows["actor"].append(actor)
        rows["payload"].append(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return rows


def read_result(payload: bytes) -> Result:
    return pickle.loads(payload)


def _open(path: str, password: Optional[str]) -> Any:
    from mineru_fit.parsing.providers import open_document

    return open_document(Path(path), password)


def render_pages(batch: dict[str, Any], *, dpi: int, password: Optional[str]) -> dict[str, list[Any]]:
    """Pages -> RGB pixels (raw bytes: no encode/decode between two processes of one pipeline).

    A page that cannot be rendered carries the reason instead, and fails in the engine stage."""
    out: dict[str, list[Any]] = {"file_no": [], "page_idx": [], "image": [], "width": [], "height": [], "error": []}
    docs: dict[str, Any] = {}
    try:
        for file_no, page_idx, path in zip(batch["file_no"], batch["page_idx"], batch["path"]):
            image, error = None, ""
            try:
                if path not in docs:
                    docs[path] = _open(str(path), password)
                image = docs[path].render(int(page_idx), dpi)
            except InputDocumentError as exc:
                error = str(exc)
            except Exception as exc:  # PDFium fails per page: this page fails, not the run
                error = f"page {int(page_idx) + 1} cannot be rendered ({type(exc).__name__}: {exc})"
            out["file_no"].append(int(file_no))
            out["page_idx"].append(int(page_idx))
            out["image"].append(image.tobytes() if image is not None else b"")
            out["width"].append(image.width if image is not None else 0)
            out["height"].append(image.height if image is not None else 0)
            out["error"].append(error)
    finally:
        for doc in docs.values():
            doc.close()
    return out


def decode_image(data: bytes, width: int, height: int) -> Any:
    from PIL import Image

    return Image.frombytes("RGB", (int(width), int(height)), bytes(data))


def flash_pages(batch: dict[str, Any], *, password: Optional[str]) -> dict[str, list[Any]]:
    """The flash tier (docvortex, no model) for pages of one PDF per row, in this CPU task."""
    from mineru_fit.parsing.flash import parse_flash

    results: list[tuple[int, Result]] = []
    for file_no, path, pages in zip(batch["file_no"], batch["path"], batch["pages"]):
        file_no, pages = int(file_no), [int(p) for p in pages]
        settled: dict[int, Result] = {}

        def keep(result: Result) -> None:
            record = result.record if isinstance(result, PageOutput) else result
            settled[record.page_idx] = result

        error = None
        doc = None
        try:
            doc = _open(str(path), password)
            parse_flash(doc.source_for_flash(), doc, pages, keep, keep)
        except InputDocumentError as exc:
            error = str(exc)
        except Exception as exc:  # as the single-process flash tier: its pages say what went wrong
            error = f"flash failed on this file: {type(exc).__name__}: {exc}"
        finally:
            if doc is not None:
                doc.close()
        for page_idx in pages:
            results.append((file_no, settled.get(page_idx) or PageRecord(
                page_idx=page_idx, tier="flash", ok=False, seconds=0.0, error=error or "flash returned nothing")))
    return result_rows(results, FLASH)
