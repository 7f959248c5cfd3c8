"""`mineru-fit compare`: the same pages at two levels, text agreement per block type and pages/s.

The agreement arithmetic is checked on content lists written by hand (rapidfuzz does the edit
distance); the command runs end to end on the CPU with the tiny random Qwen2-VL, whose pages
come out empty (its layout answer is noise), and against the flash tier, whose pages do not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from guide.env import isolate

from mineru_fit.parsing.compare import LevelRun, agreement_by_type, block_text, block_type

pytest.importorskip("rapidfuzz")


def run_of(level: str, items: list[dict]) -> LevelRun:
    return LevelRun(level=level, pages_ok=2, pages_failed=0, seconds=2.0, work_seconds=1.0, items=tuple(items))


def text(page: int, body: str, **extra) -> dict:
    return {"type": "text", "page_idx": page, "text": body, **extra}


def test_identical_pages_agree_fully_and_edits_cost_their_share():
    reference = run_of("none", [text(0, "Memory planning"), text(0, "abcd"), text(1, "wxyz"),
                                {"type": "table", "page_idx": 1, "table_body": "<table><tr><td>1</td></tr></table>"}])
    same = run_of("basic", list(reference.items))
    # One substitution in page 0's body text "Memory planning\nabcd" (20 characters) and page 1's "wxyz" (4).
    edited = run_of("extreme", [text(0, "Memory planning"), text(0, "abce"), text(1, "wxyz"),
                                {"type": "table", "page_idx": 1, "table_body": "<table><tr><td>1</td></tr></table>"}])
    types, overall = agreement_by_type([reference, same, edited])
    rows = {t.block_type: t for t in types}
    assert set(rows) == {"text", "table"}
    assert rows["text"].agreement == (1.0, pytest.approx(1 - 1 / 24))
    assert rows["table"].agreement == (1.0, 1.0) and rows["text"].blocks == (3, 3, 3)
    assert overall[0] == 1.0 and 0.9 < overall[1] < 1.0


def test_a_block_one_level_missed_counts_as_full_disagreement_and_headings_are_their_own_type():
    reference = run_of("none", [text(0, "Title", text_level=1), text(0, "body")])
    missing = run_of("extreme", [text(0, "Title", text_level=1)])
    types, overall = agreement_by_type([reference, missing])
    rows = {t.block_type: t for t in types}
    assert rows["title"].agreement == (1.0,) and rows["text"].agreement == (0.0,)
    assert rows["text"].blocks == (1, 0)
    assert overall == (pytest.approx(5 / 9),)  # "Title" agrees, "body" (4) is missing: 1 − 4/9


def test_no_text_on_either_side_has_no_agreement_figure():
    types, overall = agreement_by_type([run_of("none", []), run_of("extreme", [])])
    assert types == () and overall == (None,)


def test_block_text_takes_every_field_that_carries_text():
    table = {"type": "table", "table_body": "<table/>", "table_caption": ["Table 1"], "table_footnote": ["n=3"]}
    assert block_type(table) == "table" and block_text(table) == "<table/>\nTable 1\nn=3"
    assert block_type({"type": "text", "text": "x", "text_level": 2}) == "title"


# --- the command, end to end ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("mineru_vl_utils")
    from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("reportlab")
    from mineru_fit.parsing.sample import write_sample_pdf

    return write_sample_pdf(tmp_path_factory.mktemp("in") / "sample.pdf")


def compare(*args: str, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    import mineru_fit.cli.commands  # noqa: F401  (registers every command)
    from mineru_fit.cli.app import app

    isolate(monkeypatch).setenv("MINERU_DEVICE_MODE", "cpu")
    return CliRunner().invoke(app, ["compare", *args])


def test_compare_parses_the_same_pages_at_two_levels_with_the_tiny_model(tiny, sample, tmp_path, monkeypatch):
    result = compare(str(sample), "--model", str(tiny), "--levels", "none,extreme", "--pages", "1-2",
                     "--max-new-tokens", "4", "--dpi", "72", "-o", str(tmp_path), "--json", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout[result.stdout.index("{"):])
    assert body["reference"] == "none"
    assert [(r["level"], r["pages_ok"], r["pages_failed"]) for r in body["levels"]] == [("none", 2, 0), ("extreme", 2, 0)]
    assert all(r["pages_per_s"] > 0 and r["seconds"] >= r["work_seconds"] for r in body["levels"])
    for level in ("none", "extreme"):  # each level's own MinerU outputs, made by that level
        pages = json.loads((tmp_path / level / "sample" / "vlm" / "sample_pages.json").read_text())
        assert [p["level"] for p in pages] == [level, level]


def test_compare_against_the_flash_tier_reports_each_block_type(tiny, sample, tmp_path, monkeypatch):
    pytest.importorskip("docvortex")
    result = compare(str(sample), "--model", str(tiny), "--levels", "flash,extreme", "--pages", "1",
                     "--max-new-tokens", "4", "--dpi", "72", "-o", str(tmp_path), "--json", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout[result.stdout.index("{"):])
    flash_items = json.loads((tmp_path / "flash" / "sample" / "flash" / "sample_content_list.json").read_text())
    found = {}
    for item in flash_items:
        found[block_type(item)] = found.get(block_type(item), 0) + 1
    assert {"title", "text"} <= set(found)
    rows = {r["type"]: r for r in body["block_types"]}
    # The random model reads nothing on the page: every block type the flash tier found disagrees fully.
    assert {k: r["blocks"]["flash"] for k, r in rows.items()} == found
    assert all(r["blocks"]["extreme"] == 0 and r["agreement"]["extreme"] == 0.0 for r in rows.values())


def test_the_table_shows_blocks_agreement_and_speed_per_level(monkeypatch):
    from rich.console import Console

    from mineru_fit.cli import compare_cmd
    from mineru_fit.parsing.compare import Comparison

    runs = (run_of("none", [text(0, "abcd")]), run_of("extreme", [text(0, "abce")]))
    types, overall = agreement_by_type(runs)
    monkeypatch.setattr(compare_cmd, "console", Console(record=True, width=120))
    compare_cmd.render(Comparison(("none", "extreme"), runs, types, overall, ("a note",)), None)
    shown = compare_cmd.console.export_text()
    assert "75.0%" in shown and "2.00" in shown and "note: a note" in shown  # 1 − 1/4; 2 pages in 1 s


@pytest.mark.parametrize("name, levels, message", [
    ("absent.pdf", "none,extreme", "absent.pdf does not exist — check the path"),
    ("sample.pdf", "none", "--levels needs two levels or more"),
    ("sample.pdf", "none,none", "names a level twice"),
    ("sample.pdf", "none,ludicrous", "'ludicrous' is not a level"),
])
def test_bad_input_is_one_line_exit_2(name, levels, message, tiny, sample, monkeypatch):
    from mineru_fit.errors import UsageError

    result = compare(str(sample.with_name(name)), "--model", str(tiny), "--levels", levels, monkeypatch=monkeypatch)
    assert isinstance(result.exception, UsageError) and message in str(result.exception)
    assert len(str(result.exception).splitlines()) == 1
