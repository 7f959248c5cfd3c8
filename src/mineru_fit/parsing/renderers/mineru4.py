"""One document's model pages -> MinerU 4's outputs: middle JSON, Markdown, structured content, content_list.

MinerU 4 builds its middle JSON with docvortex's post-processing and writes Markdown and
structured content with docvortex's renderers; we hand docvortex the whole document at once,
so paragraphs split across columns and pages are joined (break hyphens removed) as MinerU does.
Its zip holds `markdown.md`, `middle_json.json`, `structured_content.json` and `images/`.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from mineru_fit import __version__
from mineru_fit.parsing.renderers.content_list import render_content_list

# Suffix of each output file after <name> in our folder layout, by MinerU 4's format name (and ours).
SUFFIXES = {"markdown": ".md", "middle_json": "_middle.json", "structured_content": "_structured_content.json",
            "content_list": "_content_list.json", "pages": "_pages.json"}
# What MinerU 4's zip and its API call each output (ParseResult.save, api_server's file names).
ZIP_MEMBERS = {"markdown": "markdown.md", "middle_json": "middle_json.json",
               "structured_content": "structured_content.json"}
EXTENSION = "mineru_fit"   # our note in the middle JSON: which tier made it (never MinerU's own "mineru" key)


@dataclass(frozen=True)
class Mineru4Outputs:
    """Everything MinerU 4 writes for one document, plus its content_list."""

    middle_json: str
    markdown: str                       # whole document; a comment where a page is missing
    structured_content: str
    content_list: list[dict[str, Any]]
    assets: dict[str, bytes]            # images/<hash>.<ext> -> bytes, as the middle JSON names them


def available() -> bool:
    """docvortex (the flash extra, also in the engine extra) is what builds MinerU 4's middle JSON."""
    import importlib.util

    return importlib.util.find_spec("docvortex") is not None


def _runs(pages: Sequence[tuple[int, Any]], missing: dict[int, str]) -> list[tuple[list[Any], Optional[str]]]:
    """Pages cut into runs of consecutive converted pages; each run followed by the note of a missing page."""
    events = sorted([(i, "page", p) for i, p in pages] + [(i, "gap", m) for i, m in missing.items()],
                    key=lambda e: e[0])
    runs: list[tuple[list[Any], Optional[str]]] = []
    current: list[Any] = []
    for page_idx, kind, value in events:
        if kind == "page":
            current.append(value)
        else:
            runs.append((current, f"<!-- page {page_idx + 1} not converted: {value} -->"))
            current = []
    if current:
        runs.append((current, None))
    return runs


def build_outputs(pages: Sequence[tuple[int, list[dict[str, Any]]]], *, tier: str, producer: str = "mineru-fit",
                  missing: Optional[dict[int, str]] = None) -> Mineru4Outputs:
    """MinerU 4's files from (page_idx, model blocks) of every converted page; `missing` page_idx -> why."""
    from docvortex import postprocess_document
    from docvortex.export import materialize_middle
    from docvortex.render.markdown import render_markdown
    from docvortex.render.structured_content import render_structured_content
    from docvortex.schema import DocumentMetadata, ModelJson, Producer

    ordered = sorted(pages, key=lambda p: p[0])
    model = ModelJson(
        pages=[blocks for _, blocks in ordered], page_index_map=[i for i, _ in ordered],
        metadata=DocumentMetadata(file_suffix="pdf", producer=Producer(name=producer, version=__version__)),
        extensions={EXTENSION: {"tier": tier, "version": __version__}},
    )
    result = postprocess_document(model)  # images come out as files under images/, named by page and block
    middle, assets = materialize_middle(result.middle_json, result.assets)
    by_idx = {page.page_idx: page for page in middle.pages}
    blocks: list[str] = []
    for run, gap in _runs([(i, by_idx[i]) for i, _ in ordered if i in by_idx], missing or {}):
        if run:
            text = render_markdown(middle.model_copy(update={"pages": run})).strip()
            if text:
                blocks.append(text)
        if gap:
            blocks.append(gap)
    middle_text = json.dumps(middle.to_dict(skip_defaults=True, exclude_block_fields={"image_base64"}),
                             ensure_ascii=False, indent=2)
    return Mineru4Outputs(
        middle_json=middle_text, markdown="\n\n".join(blocks) + "\n",
        structured_content=json.dumps(render_structured_content(middle), ensure_ascii=False, indent=2),
        content_list=render_content_list(middle), assets={path: assets[path] for path in assets},
    )


def write_zip(folder: Path, name: str, dest: Path) -> Path:
    """MinerU 4's self-contained zip of one document written under `folder` (markdown.md, middle_json.json, ...)."""
    partial = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for fmt, member in ZIP_MEMBERS.items():
            path = folder / f"{name}{SUFFIXES[fmt]}"
            if path.is_file():
                archive.write(path, member)
        images = folder / "images"
        for image in sorted(images.iterdir()) if images.is_dir() else ():
            archive.write(image, f"images/{image.name}")
    partial.replace(dest)
    return dest


def inline_markdown(folder: Path, name: str) -> str:
    """The document's Markdown with its images inline as data URIs, as `mineru-kit parse -f markdown` writes it."""
    from docvortex.render.markdown import render_markdown
    from docvortex.schema import MiddleJson

    middle = MiddleJson.from_dict(json.loads((folder / f"{name}{SUFFIXES['middle_json']}").read_text(encoding="utf-8")))
    pending = [block for page in middle.pages for block in page.blocks]
    while pending:
        block = pending.pop()
        pending.extend(child for child in getattr(block, "content", None) or () if hasattr(child, "type"))
        path = getattr(block, "image_path", None)
        if path and (folder / path).is_file():
            mime = mimetypes.guess_type(path)[0] or "image/jpeg"
            data = base64.b64encode((folder / path).read_bytes()).decode("ascii")
            block.image_base64 = f"data:{mime};base64,{data}"
            block.image_path = None
    return render_markdown(middle)
