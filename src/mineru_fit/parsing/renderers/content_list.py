"""A middle JSON as MinerU 4's flat content_list (its "v1" list), written with docvortex's public fragments.

What MinerU 4 does, reimplemented (its code is not copied): one item per top-level block in reading
order; consecutive reference entries on a page become one `list` (sub_type ref_text); text keeps
its inline markup (bold, sup/sub, links, inline LaTeX) as docvortex renders it; bboxes go to a
0–1000 grid; each block type carries MinerU's key names (img_path, table_body, image_caption, ...).
Paragraphs are not joined here — MinerU joins them only in its Markdown.
"""

from __future__ import annotations

from typing import Any, Optional


def _annotations(block: Any, kind: str, render: Any) -> list[str]:
    """Captions or footnotes of a visual block (`kind`: e.g. 'image_caption'), in their index order."""
    found = [(pos, child) for pos, child in enumerate(block.content)
             if str(getattr(child, "type", "")) == kind and isinstance(getattr(child, "content", None), list)]
    found.sort(key=lambda pair: (pair[1].index is None, pair[1].index or 0, pair[0]))
    return [render(child.content) for _, child in found]


def _body(block: Any) -> Any:
    for child in block.content:
        if str(getattr(child, "type", "")).endswith(("_body",)):
            return child
    raise ValueError(f"a {block.type} block without its body")


def _grid(bbox: Optional[Any]) -> Optional[list[int]]:
    return [int(v * 1000) for v in bbox] if bbox is not None else None


def _leaves(block: Any, container: str, depth: int = 0) -> list[tuple[Any, int]]:
    out: list[tuple[Any, int]] = []
    for child in block.content:
        if str(child.type) == container:
            out += _leaves(child, container, depth + 1)
        else:
            out.append((child, depth))
    return out


class _Writer:
    def __init__(self, asset_base_url: str) -> None:
        from docvortex.options import LatexDelimitersConfig
        from docvortex.render import fragments

        self.fragments = fragments
        self.delimiters = LatexDelimitersConfig()  # MinerU's default delimiters are docvortex's
        self.base = asset_base_url

    def inline(self, spans: Any) -> str:
        return self.fragments.render_inline_content(spans, self.delimiters)

    def image(self, block: Any) -> str:
        source = self.fragments.resolve_image_source(block, self.base)
        return self.fragments.normalize_image_source(source) if source else ""

    def embedded(self, content: str) -> str:
        if not content:
            return ""
        return self.fragments.format_embedded_html(content, asset_base_url=self.base, delimiters=self.delimiters).strip()

    def item(self, block: Any) -> Optional[dict[str, Any]]:
        kind = str(block.type)
        if kind == "text":
            return self._anchored({"type": "text", "text": self.inline(block.content)}, block)
        if kind in ("doc_title", "paragraph_title"):
            return self._anchored({"type": "text", "text": self.inline(block.content), "text_level": block.level}, block)
        if kind == "page_footnote":
            return self._anchored({"type": "page_footnote", "text": self.inline(block.content)}, block)
        if kind in ("header", "footer", "page_number", "aside_text"):
            return {"type": kind, "text": self.inline(block.content)}
        if kind == "equation":
            item: dict[str, Any] = {"type": "equation", "img_path": self.image(block)}
            if block.content.strip():
                item.update(text=block.content.strip(), text_format="latex")
            return item
        if kind == "list":
            return {"type": "list", "sub_type": str(block.sub_type or "text"),
                    "list_items": [self.inline(leaf.content) for leaf, _ in _leaves(block, "list") if leaf.content]}
        if kind == "index":
            return {"type": "index", "list_items": self._index(block)}
        if kind in ("image", "table", "chart"):
            return self._visual(block, kind)
        if kind == "code":
            body = _body(block)
            text = body.content if isinstance(body.content, str) else self.inline(body.content)
            return {"type": "code", "sub_type": "algorithm" if block.sub_type == "algorithm" else "code",
                    "code_body": text, "code_caption": _annotations(block, "code_caption", self.inline),
                    "code_footnote": _annotations(block, "code_footnote", self.inline)}
        return None

    def _index(self, block: Any) -> list[str]:
        entries = []
        for leaf, depth in _leaves(block, "index"):
            label = self.inline(self.fragments.strip_index_page_tail(leaf.content)).strip()
            if not label:
                continue
            if leaf.anchor:
                label = self.fragments.render_internal_link(label, leaf.anchor)
            entries.append(f"{'    ' * depth}- {label}")
        return entries

    def _visual(self, block: Any, kind: str) -> dict[str, Any]:
        body = _body(block)
        item: dict[str, Any] = {"type": kind, "img_path": self.image(body)}
        content = self.embedded(body.content)
        if kind == "chart":
            item["content"] = content
        item[f"{kind}_caption"] = _annotations(block, f"{kind}_caption", self.inline)
        item[f"{kind}_footnote"] = _annotations(block, f"{kind}_footnote", self.inline)
        if kind == "image" and content:
            item["content"] = content
        elif kind == "table" and content:
            item["table_body"] = content
        if kind != "table" and block.sub_type:
            item["sub_type"] = block.sub_type
        return item

    @staticmethod
    def _anchored(item: dict[str, Any], block: Any) -> dict[str, Any]:
        anchor = (getattr(block, "anchor", None) or "").strip()
        if anchor:
            item["anchor"] = anchor
        return item


def render_content_list(middle: Any, *, asset_base_url: str = "") -> list[dict[str, Any]]:
    """MinerU 4's content_list for a docvortex MiddleJson (images as its materialised paths)."""
    writer = _Writer(asset_base_url)
    output: list[dict[str, Any]] = []
    for page in middle.pages:
        refs: list[Any] = []

        def flush() -> None:
            if refs:
                boxes = [b.bbox for b in refs if b.bbox is not None]
                box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                       max(b[3] for b in boxes)) if boxes else None
                item = {"type": "list", "sub_type": "ref_text",
                        "list_items": [writer.inline(b.content) for b in refs if b.content]}
                output.append(_placed(item, box, page.page_idx))
                refs.clear()

        for block in page.blocks:
            if str(block.type) == "ref_text":
                refs.append(block)
                continue
            flush()
            item = writer.item(block)
            if item is not None:
                output.append(_placed(item, block.bbox, page.page_idx))
        flush()
    return output


def _placed(item: dict[str, Any], bbox: Any, page_idx: int) -> dict[str, Any]:
    grid = _grid(bbox)
    if grid:
        item["bbox"] = grid
    item["page_idx"] = page_idx
    return item
