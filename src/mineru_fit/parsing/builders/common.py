"""What both builders share: MinerU's 0–1000 bbox grid and the block types."""

from __future__ import annotations

from typing import Any, Optional, Sequence

# content_list keeps page furniture under its own type (MinerU does the same).
FURNITURE = frozenset({"header", "footer", "page_number", "aside_text", "page_footnote"})
TITLE_LEVEL = {"doc_title": 1, "title": 1, "paragraph_title": 2}
TEXT_TYPES = frozenset({"text", "ref_text", "list_item", "phonetic", "index", "formula_number", "unknown"})


def grid_bbox(bbox: Optional[Sequence[float]]) -> list[int]:
    """A 0..1 box on MinerU's 0–1000 integer grid (an absent box is the whole page)."""
    if not bbox:
        return [0, 0, 1000, 1000]
    return [max(0, min(1000, int(round(float(v) * 1000)))) for v in bbox]


def item(kind: str, bbox: Optional[Sequence[float]], page_idx: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields, "bbox": grid_bbox(bbox), "page_idx": page_idx}
