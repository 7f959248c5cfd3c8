"""The pure parts of `parse`: page ranges, tier choice, block conversion, Markdown, adaptive limits."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from mineru_fit.errors import InputDocumentError, UsageError
from mineru_fit.parsing import PageSelection, choose_tier
from mineru_fit.parsing.discover import discover
from mineru_fit.parsing.flash import page_range
from mineru_fit.parsing.renderers.markdown import render_markdown
from mineru_fit.parsing.vlm.limits import RECOVER_AFTER_PAGES, PageLimit, Throttle


@pytest.mark.parametrize("text, count, pages", [
    ("1-5,9", 20, [0, 1, 2, 3, 4, 8]),
    ("3-", 5, [2, 3, 4]),
    ("2,2,1", 3, [0, 1]),
    (" 4 - 6 ", 10, [3, 4, 5]),
])
def test_page_ranges_are_one_based_inclusive_and_sorted(text: str, count: int, pages: list[int]) -> None:
    assert PageSelection.parse(text).resolve(count)[0] == pages


@pytest.mark.parametrize("text", ["1-x", "0", "5-2", "", "1,,2", "a"])
def test_malformed_page_ranges_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--pages"):
        PageSelection.parse(text)


def test_a_range_past_the_end_is_clamped_with_a_note_and_one_outside_is_an_error() -> None:
    pages, note = PageSelection.parse("2-9").resolve(3)
    assert pages == [1, 2] and "beyond the last page (3)" in note
    with pytest.raises(InputDocumentError, match="selects none of its 1000 pages"):
        PageSelection.parse("1001-1005").resolve(1000)


def test_docvortex_ranges_collapse_runs() -> None:
    assert page_range([0, 1, 2, 4, 6, 7]) == "1-3,5,7-8"
    assert page_range([9]) == "10"


def test_auto_takes_vlm_only_with_a_model_and_a_level_that_fits(tmp_path: Path) -> None:
    no_model = choose_tier("auto", server_url=None, model_dir=None, model_name="m", plan_level=None)
    assert no_model.tier == "flash" and "not downloaded" in no_model.reason
    fits = choose_tier("auto", server_url=None, model_dir=tmp_path, model_name="m", plan_level="basic", plan_reason="r")
    assert fits.tier == "vlm" and "level basic fits" in fits.reason
    too_big = choose_tier("auto", server_url=None, model_dir=tmp_path, model_name="m", plan_level="flash")
    assert too_big.tier == "flash" and "no level fits" in too_big.reason
    server = choose_tier("auto", server_url="http://x:1", model_dir=None, model_name="m", plan_level=None)
    assert server.tier == "vlm" and "--server" in server.reason


def test_impossible_tier_requests_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="models download"):
        choose_tier("vlm", server_url=None, model_dir=None, model_name="m", plan_level=None)
    with pytest.raises(UsageError, match="drop --server"):
        choose_tier("flash", server_url="http://x:1", model_dir=None, model_name="m", plan_level=None)


def test_discover_expands_folders_names_uniquely_and_reports_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "x.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "a" / "notes.txt").write_text("ignored in a folder")
    files = discover([tmp_path / "a", tmp_path / "b" / "x.pdf", tmp_path / "nope.pdf"])
    assert [f.name for f in files] == ["x", "x_2", "nope"]
    assert files[2].error and "does not exist" in files[2].error


def _mineru25_page() -> list[dict]:
    """One page as MinerU2.5 answers it (after mineru-vl-utils' post-processing)."""
    return [
        {"type": "title", "bbox": [0.1, 0.05, 0.9, 0.08], "content": "2 Method"},
        {"type": "text", "bbox": [0.1, 0.13, 0.9, 0.2], "content": "Energy is \\(E=mc^2\\) exactly."},
        {"type": "table", "bbox": [0.1, 0.3, 0.9, 0.5], "content": "<table><tr><td>A</td><td>B</td></tr></table>"},
        {"type": "table_caption", "bbox": [0.1, 0.26, 0.9, 0.29], "content": "Table 1: Cells"},
        {"type": "equation", "bbox": [0.2, 0.55, 0.8, 0.6], "content": "\\[ a^2+b^2=c^2 \\]"},
        {"type": "page_number", "bbox": [0.45, 0.95, 0.55, 0.97], "content": "5"},
    ]


def test_mineru25_blocks_become_mineru4_content_list_and_markdown() -> None:
    pytest.importorskip("docvortex")
    from mineru_fit.parsing.builders.model_blocks import vlm_model_page
    from mineru_fit.parsing.renderers.mineru4 import build_outputs

    page = vlm_model_page(_mineru25_page(), Image.new("RGB", (200, 300), "white"))
    out = build_outputs([(4, page)], tier="vlm")
    items = out.content_list
    assert [i["type"] for i in items] == ["text", "text", "table", "equation", "page_number"]
    assert items[0]["text_level"] == 2  # MinerU keeps a title its layout model did not confirm at level 2
    assert items[1]["text"] == "Energy is $E=mc^2$ exactly."
    assert items[2]["table_body"].startswith("<table>") and items[2]["table_caption"] == ["Table 1: Cells"]
    assert items[2]["img_path"].startswith("images/") and items[2]["img_path"] in out.assets
    assert items[3]["text"] == "a^2+b^2=c^2" and items[3]["text_format"] == "latex"
    assert all(i["page_idx"] == 4 for i in items) and items[2]["bbox"] == [100, 300, 900, 500]
    assert out.markdown.startswith("## 2 Method") and "Table 1: Cells" in out.markdown
    assert "$$\na^2+b^2=c^2\n$$" in out.markdown and "\n5\n" not in out.markdown  # page numbers stay out
    assert json.loads(out.middle_json)["extensions"]["mineru_fit"]["tier"] == "vlm"


def test_mineru_blocks_become_items_with_crops_and_attached_captions() -> None:
    from mineru_vl_utils.structs import ContentBlock

    from mineru_fit.parsing.builders.vlm_blocks import page_items

    blocks = [
        ContentBlock("title", [0.1, 0.05, 0.9, 0.1], content="Results"),
        ContentBlock("text", [0.1, 0.12, 0.9, 0.2], content="Body text."),
        ContentBlock("table", [0.1, 0.3, 0.9, 0.5], content="<table><tr><td>7</td></tr></table>"),
        ContentBlock("table_caption", [0.1, 0.25, 0.9, 0.29], content="Table 2: Seven"),
        ContentBlock("equation", [0.2, 0.55, 0.8, 0.6], content="\\[\na+b\n\\]"),
        ContentBlock("image", [0.2, 0.65, 0.8, 0.85]),
        ContentBlock("image_caption", [0.2, 0.86, 0.8, 0.88], content="Figure 3: A picture"),
        ContentBlock("header", [0.0, 0.0, 1.0, 0.02], content="Running head"),
    ]
    page = Image.new("RGB", (400, 600), "white")
    items, crops = page_items(blocks, page, page_idx=2)
    kinds = [i["type"] for i in items]
    assert kinds == ["text", "text", "table", "equation", "image", "header"]
    assert items[0]["text_level"] == 1
    assert items[2]["table_caption"] == ["Table 2: Seven"] and items[4]["image_caption"] == ["Figure 3: A picture"]
    assert items[3]["text"] == "$$\na+b\n$$"
    assert {path for path, _ in crops} == {items[2]["img_path"], items[3]["img_path"], items[4]["img_path"]}
    assert all(Image.open(io.BytesIO(data)).format == "JPEG" for _, data in crops)
    md = render_markdown(items)
    assert "# Results" in md and "Running head" not in md and f"![]({items[4]['img_path']})" in md
    json.dumps(items)  # content_list.json must serialise as is


def test_page_limit_halves_once_per_pressure_wave_and_recovers() -> None:
    limit = PageLimit(8)
    assert limit.pressure(launched_at=8) is False and limit.pages == 4
    assert limit.pressure(launched_at=8) is False and limit.pages == 4  # launched together: one halving
    limit.pressure(launched_at=4)
    limit.pressure(launched_at=2)
    assert limit.pages == 1 and limit.pressure(launched_at=1) is True
    for _ in range(RECOVER_AFTER_PAGES):
        limit.success()
    assert limit.pages == 2


def test_throttle_never_admits_more_than_its_limit_and_can_grow() -> None:
    async def peak_with(throttle: Throttle, limit: int) -> int:
        await throttle.resize(limit)
        peak = 0

        async def work() -> None:
            nonlocal peak
            async with throttle:
                peak = max(peak, throttle.active)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(work() for _ in range(10)))
        return peak

    async def scenario() -> tuple[int, int]:
        throttle = Throttle(2)
        return await peak_with(throttle, 2), await peak_with(throttle, 4)

    assert asyncio.run(scenario()) == (2, 4)


@pytest.mark.parametrize("server_len, side", [(1024, 756), (8192, None)])
def test_a_server_with_a_short_context_gets_a_layout_page_that_fits_it(monkeypatch, server_len, side) -> None:
    """A vLLM/SGLang server we did not start may not cap pixels: MinerU's 1036×1036 layout page
    (1369 image tokens) would overflow a 1024-token context on every page."""
    pytest.importorskip("mineru_vl_utils")
    import asyncio

    import httpx

    from mineru_fit.parsing.vlm.backends import ServerBackend

    answer = {"data": [{"id": "mineru25", "object": "model", "max_model_len": server_len}]}
    monkeypatch.setattr(httpx, "get", lambda url, **_: httpx.Response(200, json=answer))
    backend = ServerBackend("http://127.0.0.1:9/v1")
    asyncio.run(backend.start())
    import io

    from PIL import Image

    sent = backend.mineru.helper.prepare_for_layout(Image.new("RGB", (1240, 1754), "white"))
    assert Image.open(io.BytesIO(sent)).size == ((side, side) if side else (1036, 1036))
    said = [n for n in backend.notes if "layout page" in n]
    assert said == ([f"context 1024 shrinks MinerU's layout page to 756×756 px (from 1036×1036) and caps every "
                     f"answer at {backend.cap} tokens: a longer table or text block is cut off"] if side else [])
