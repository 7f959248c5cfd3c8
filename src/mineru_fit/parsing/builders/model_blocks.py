"""MinerU2.5 blocks -> one page of docvortex's model JSON, the raw form MinerU 4 post-processes; pure.

MinerU 4 sends its VLM's blocks through docvortex's post-processing (paragraph joins across
columns and pages, caption grouping, list building) to get its middle JSON. Handing docvortex
the same raw page makes our vlm outputs follow the same rules. MinerU splits the VLM's generic
`title` with a layout model we do not run; without it MinerU keeps such a title as a level-2
paragraph title, and so do we. Crops travel inline as data URIs, as docvortex's own analysers
leave them, so a page checkpoint holds everything its page needs.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Optional, Sequence

from mineru_fit.parsing.builders.vlm_blocks import crop_jpeg

_INLINE_MATH = re.compile(r"\\\((?P<tex>.*?)\\\)", re.DOTALL)
# Block types whose content is prose (inline LaTeX in \( \) becomes an equation span).
_PROSE = frozenset({
    "text", "doc_title", "paragraph_title", "aside_text", "header", "footer", "page_number", "page_footnote",
    "ref_text", "list_item", "index", "caption", "footnote", "image_caption", "image_footnote", "table_caption",
    "table_footnote", "code_caption", "chart_caption", "chart_footnote", "formula_number",
})
_VISUAL = frozenset({"image", "chart", "table"})
_CONTAINERS = frozenset({"list", "image_block", "equation_block"})  # their members are blocks of their own
_RENAMED = {"phonetic": "text", "unknown": "text"}


def prose_spans(text: str) -> list[dict[str, Any]]:
    """MinerU2.5 prose as inline spans: plain text, with each \\( … \\) as an inline equation."""
    spans: list[dict[str, Any]] = []
    cursor = 0
    for match in _INLINE_MATH.finditer(text):
        if match.start() > cursor:
            spans.append({"type": "text", "content": text[cursor:match.start()]})
        spans.append({"type": "equation_inline", "content": match.group("tex").strip()})
        cursor = match.end()
    if cursor < len(text):
        spans.append({"type": "text", "content": text[cursor:]})
    return spans


def _display_math(content: str) -> str:
    body = content.strip()
    if body.startswith("\\["):
        body = body[2:]
    if body.endswith("\\]"):
        body = body[:-2]
    return body.strip()


def _crop_data_url(page_image: Any, bbox: Sequence[float]) -> Optional[str]:
    data = crop_jpeg(page_image, bbox)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii") if data is not None else None


def _bbox(raw: Any) -> Optional[list[float]]:
    if not raw or len(raw) != 4:
        return None
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in raw)
    return [x0, y0, x1, y1] if x1 > x0 and y1 > y0 else None


def vlm_model_page(blocks: Sequence[Any], page_image: Any) -> list[dict[str, Any]]:
    """One page's post-processed MinerU2.5 blocks (dicts with type, bbox in 0..1, content) as model blocks."""
    page: list[dict[str, Any]] = []
    for block in blocks:
        kind = _RENAMED.get(block["type"], block["type"])
        bbox = _bbox(block.get("bbox"))
        content = block.get("content") or ""
        if kind in _CONTAINERS or bbox is None:
            continue
        raw: dict[str, Any] = {"type": kind, "bbox": bbox}
        if kind == "title":
            raw.update(type="paragraph_title", level=2, content=prose_spans(content.strip()))
        elif kind in ("doc_title", "paragraph_title"):
            raw.update(level=1 if kind == "doc_title" else 2, content=prose_spans(content.strip()))
        elif kind in _PROSE:
            raw["content"] = prose_spans(content.strip())
        elif kind == "equation":
            raw["content"] = _display_math(content)
        elif kind in _VISUAL:
            raw["content"] = content.strip() if kind == "table" else ""
            image = _crop_data_url(page_image, bbox)
            if image is not None:
                raw["image_base64"] = image
        else:  # code, algorithm: kept verbatim
            raw["content"] = content
        if kind in _PROSE and not raw["content"]:
            continue  # MinerU drops prose blocks with nothing in them
        page.append(raw)
    return page
