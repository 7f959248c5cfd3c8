"""docvortex's middle JSON (one page, as a dict) -> MinerU content_list items; pure."""

from __future__ import annotations

from typing import Any, Iterable

from mineru_fit.parsing.builders.common import FURNITURE, TEXT_TYPES, item

_VISUAL = {"image": "image_body", "table": "table_body", "chart": "chart_body"}


def spans_text(spans: Any) -> str:
    """Inline spans as MinerU writes text: plain, inline LaTeX in $…$, inline code in backticks."""
    if isinstance(spans, str):
        return spans
    out: list[str] = []
    for span in spans or ():
        kind = span.get("type")
        if kind == "text" and isinstance(span.get("content"), str):
            out.append(span["content"])
        elif kind == "equation_inline":
            out.append(f"${span.get('content', '')}$")
        elif kind == "code_inline":
            out.append(f"`{span.get('content', '')}`")
        elif kind == "hyperlink":
            out.append(spans_text(span.get("content")))
    return "".join(out).strip()


def _children(block: dict[str, Any], kind: str) -> list[str]:
    return [spans_text(c.get("content")) for c in block.get("content", []) if c.get("type") == kind]


def _list_entries(children: Iterable[dict[str, Any]], depth: int = 0) -> list[str]:
    entries: list[str] = []
    for child in children:
        if child.get("type") in ("list", "index"):
            entries += _list_entries(child.get("content", []), depth + 1)
        else:
            text = spans_text(child.get("content"))
            if text:
                entries.append("  " * depth + text)
    return entries


def _visual(block: dict[str, Any], page_idx: int) -> dict[str, Any]:
    kind = block["type"]
    body = next((c for c in block.get("content", []) if c.get("type") == _VISUAL[kind]), {})
    fields: dict[str, Any] = {"img_path": body.get("image_path") or ""}
    if kind == "table":
        fields["table_body"] = body.get("content") or ""
    elif body.get("content"):
        fields[f"{kind}_description"] = body["content"]
    fields[f"{kind}_caption"] = _children(block, f"{kind}_caption")
    fields[f"{kind}_footnote"] = _children(block, f"{kind}_footnote")
    return item(kind, block.get("bbox"), page_idx, **fields)


def _code(block: dict[str, Any], page_idx: int) -> dict[str, Any]:
    body = next((c for c in block.get("content", []) if c.get("type") in ("code_body", "algorithm_body")), {})
    return item("code", block.get("bbox"), page_idx, sub_type=block.get("sub_type") or "code",
                code_body=spans_text(body.get("content")), code_caption=_children(block, "code_caption"),
                code_footnote=_children(block, "code_footnote"))


def page_items(page: dict[str, Any]) -> list[dict[str, Any]]:
    """The content_list items of one docvortex page, in reading order."""
    page_idx = int(page["page_idx"])
    items: list[dict[str, Any]] = []
    for block in page.get("blocks", []):
        kind = block.get("type")
        bbox = block.get("bbox")
        if kind in ("list", "index"):  # containers of text blocks (checked before the leaf text types)
            entries = _list_entries(block.get("content", []))
            if entries:
                items.append(item("list", bbox, page_idx, sub_type=block.get("sub_type") or kind, list_items=entries))
        elif kind in ("doc_title", "paragraph_title"):
            text = spans_text(block.get("content"))
            if text:
                items.append(item("text", bbox, page_idx, text=text, text_level=int(block.get("level") or 1)))
        elif kind in TEXT_TYPES:
            text = spans_text(block.get("content"))
            if text:
                items.append(item("text", bbox, page_idx, text=text))
        elif kind in FURNITURE:
            items.append(item(kind, bbox, page_idx, text=spans_text(block.get("content"))))
        elif kind == "equation":
            latex = (block.get("content") or "").strip()
            items.append(item("equation", bbox, page_idx, text=f"$$\n{latex}\n$$" if latex else "",
                              text_format="latex", img_path=block.get("image_path") or ""))
        elif kind in _VISUAL:
            items.append(_visual(block, page_idx))
        elif kind == "code":
            items.append(_code(block, page_idx))
    return items


def image_paths(items: Iterable[dict[str, Any]]) -> list[str]:
    """Every image file the items refer to, once each."""
    return list(dict.fromkeys(i["img_path"] for i in items if i.get("img_path")))
