"""content_list items -> Markdown, the way MinerU writes it; pure."""

from __future__ import annotations

from typing import Any, Iterable

# Page furniture: kept in content_list.json (MinerU does too), left out of the Markdown.
FURNITURE = frozenset({"header", "footer", "page_number", "aside_text", "page_footnote"})


def _image(item: dict[str, Any]) -> list[str]:
    return [f"![]({item['img_path']})"] if item.get("img_path") else []


def _item_markdown(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind in FURNITURE:
        return ""
    if kind == "text":
        text = (item.get("text") or "").strip()
        level = item.get("text_level")
        return f"{'#' * min(max(int(level), 1), 6)} {text}" if level and text else text
    if kind == "list":
        return "\n".join(f"- {entry}" for entry in item.get("list_items", []) if entry)
    if kind == "equation":
        return (item.get("text") or "").strip() or "\n".join(_image(item))
    if kind == "table":
        body = (item.get("table_body") or "").strip()
        parts = [*item.get("table_caption", []), body or "\n".join(_image(item)), *item.get("table_footnote", [])]
    elif kind == "code":
        parts = [*item.get("code_caption", []), f"```\n{item.get('code_body', '').rstrip()}\n```",
                 *item.get("code_footnote", [])]
    elif kind in ("image", "chart"):
        parts = [*_image(item), *item.get(f"{kind}_caption", []), *item.get(f"{kind}_footnote", [])]
    else:
        parts = [item.get("text", "")]
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def render_markdown(items: Iterable[dict[str, Any]]) -> str:
    """One page's (or a document's) items as Markdown blocks separated by blank lines."""
    return "\n\n".join(block for block in (_item_markdown(i) for i in items) if block)
