"""MinerU2.5 blocks (mineru-vl-utils ContentBlocks: type, bbox in 0..1, content) -> content_list items.

Visual blocks (images, tables, equations, charts) are cropped from the rendered page and saved
under images/; captions and footnotes join the nearest visual block of their kind, as MinerU's
content_list nests them.
"""

from __future__ import annotations

import io
from typing import Any, Optional, Sequence

from mineru_fit.parsing.builders.common import FURNITURE, TEXT_TYPES, TITLE_LEVEL, item

# caption/footnote type -> (visual types it may belong to, field suffix)
_ATTACH = {
    "table_caption": (("table",), "caption"),
    "table_footnote": (("table",), "footnote"),
    "image_caption": (("image", "chart"), "caption"),
    "image_footnote": (("image", "chart"), "footnote"),
    "code_caption": (("code",), "caption"),
    "caption": (("image", "chart", "table", "code"), "caption"),
    "footnote": (("image", "chart", "table", "code"), "footnote"),
}
_CROPPED = frozenset({"image", "chart", "table", "equation"})
JPEG_QUALITY = 90


def _gap(a: Sequence[float], b: Sequence[float]) -> float:
    """Vertical distance between two boxes (0 when they overlap), plus a little horizontal offset."""
    vertical = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    horizontal = abs((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2)
    return vertical + 0.1 * horizontal


def _owner(index: int, blocks: Sequence[Any], kinds: tuple[str, ...]) -> Optional[int]:
    candidates = [i for i, b in enumerate(blocks) if b["type"] in kinds]
    if not candidates:
        return None
    return min(candidates, key=lambda i: _gap(blocks[index]["bbox"], blocks[i]["bbox"]))


def _latex(content: str) -> str:
    body = content.strip()
    if body.startswith("\\[") and body.endswith("\\]"):
        body = body[2:-2].strip()
    return f"$$\n{body}\n$$" if body else ""


def crop_jpeg(page_image: Any, bbox: Sequence[float]) -> Optional[bytes]:
    """The JPEG of a 0..1 box of the rendered page (None when the box is under a pixel)."""
    width, height = page_image.size
    box = (int(bbox[0] * width), int(bbox[1] * height), int(round(bbox[2] * width)), int(round(bbox[3] * height)))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None
    buffer = io.BytesIO()
    page_image.crop(box).convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def page_items(blocks: Sequence[Any], page_image: Any, page_idx: int) -> tuple[list[dict[str, Any]], list[tuple[str, bytes]]]:
    """content_list items and (image path, JPEG bytes) crops for one page's post-processed blocks."""
    owners: dict[int, list[int]] = {}
    attached: set[int] = set()
    for i, block in enumerate(blocks):
        rule = _ATTACH.get(block["type"])
        if rule is None:
            continue
        owner = _owner(i, blocks, rule[0])
        if owner is not None:
            owners.setdefault(owner, []).append(i)
            attached.add(i)
    items: list[dict[str, Any]] = []
    images: list[tuple[str, bytes]] = []
    for i, block in enumerate(blocks):
        if i in attached:
            continue
        kind, bbox, content = block["type"], block["bbox"], (block.get("content") or "")
        fields: dict[str, Any] = {}
        if kind in _CROPPED:
            data = crop_jpeg(page_image, bbox)
            if data is not None:
                fields["img_path"] = f"images/page_{page_idx}_{kind}_{i}.jpg"
                images.append((fields["img_path"], data))
        notes = owners.get(i, [])
        if kind in TITLE_LEVEL:
            if content.strip():
                items.append(item("text", bbox, page_idx, text=content.strip(), text_level=TITLE_LEVEL[kind]))
        elif kind in TEXT_TYPES or kind in _ATTACH:
            if content.strip():  # a caption with nothing to join is plain text
                items.append(item("text", bbox, page_idx, text=content.strip()))
        elif kind in FURNITURE:
            items.append(item(kind, bbox, page_idx, text=content.strip()))
        elif kind == "equation":
            items.append(item("equation", bbox, page_idx, text=_latex(content), text_format="latex", **fields))
        elif kind in ("image", "chart", "table", "code", "algorithm"):
            items.append(_visual(kind, bbox, page_idx, content, fields, [blocks[n] for n in notes]))
        # list / image_block / equation_block are containers whose members are blocks of their own
    return items, images


def _visual(kind: str, bbox: Sequence[float], page_idx: int, content: str, fields: dict[str, Any],
            notes: list[Any]) -> dict[str, Any]:
    base = "code" if kind == "algorithm" else kind
    captions = [(n.get("content") or "").strip() for n in notes if _ATTACH[n["type"]][1] == "caption"]
    footnotes = [(n.get("content") or "").strip() for n in notes if _ATTACH[n["type"]][1] == "footnote"]
    if base == "table":
        fields["table_body"] = content.strip()
    elif base == "code":
        fields.update(sub_type=kind, code_body=content)
    elif content.strip():  # image analysis, when enabled, describes the picture
        fields[f"{base}_description"] = content.strip()
    fields[f"{base}_caption"] = [c for c in captions if c]
    fields[f"{base}_footnote"] = [f for f in footnotes if f]
    return item(base, bbox, page_idx, **fields)
