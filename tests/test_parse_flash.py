"""The flash tier on real PDFs through docvortex: real content, MinerU's files, checkpoints, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

from fixtures.documents import (  # noqa: E402
    encrypted_pdf,
    many_pages_pdf,
    pdf_with_pages,
    png_header_only,
    zero_page_pdf,
)

from mineru_fit.parsing import PageSelection, ParseOptions, Status, TierChoice, parse_documents  # noqa: E402
from mineru_fit.parsing.sample import HEADINGS, TABLE, TABLE_CAPTION, TITLE, write_sample_pdf  # noqa: E402

FLASH = TierChoice("flash", "test")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_pdf(tmp_path_factory.mktemp("in") / "sample.pdf")


@pytest.fixture(scope="module")
def parsed(sample: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    return parse_documents([sample], ParseOptions(out_dir=out), FLASH), out / "sample" / "flash"


def test_the_sample_is_converted_with_its_headings_table_and_figure(parsed) -> None:
    report, folder = parsed
    assert report.status is Status.success and report.exit_code == 0
    md = (folder / "sample.md").read_text()
    for text in (TITLE, *HEADINGS, TABLE_CAPTION, "Figure 1: Pages per second by batch size"):
        assert text in md, text
    for row in TABLE:
        for cell in row:
            assert cell in md, cell
    assert md.index(HEADINGS[0]) < md.index(HEADINGS[1]) < md.index(HEADINGS[3])
    image_refs = [line for line in md.splitlines() if line.startswith("![](images/")]
    assert image_refs and all((folder / line[4:-1]).is_file() for line in image_refs)


def test_content_list_has_mineru_fields_on_a_1000_grid(parsed) -> None:
    _, folder = parsed
    items = json.loads((folder / "sample_content_list.json").read_text())
    headings = [i for i in items if i["type"] == "text" and i.get("text_level")]
    assert [h["text"] for h in headings] == [TITLE, *HEADINGS]
    table = next(i for i in items if i["type"] == "table")
    assert all(f"<td>{cell}</td>" in table["table_body"] for row in TABLE for cell in row)
    assert table["table_caption"] == [TABLE_CAPTION] and (folder / table["img_path"]).is_file()
    image = next(i for i in items if i["type"] == "image")
    assert image["page_idx"] == 2 and image["image_caption"]
    for item in items:
        assert len(item["bbox"]) == 4 and all(0 <= v <= 1000 for v in item["bbox"])
        assert item["bbox"][0] < item["bbox"][2] and item["bbox"][1] < item["bbox"][3]
    assert sorted({i["page_idx"] for i in items}) == [0, 1, 2]


def test_pages_json_says_how_each_page_went(parsed) -> None:
    _, folder = parsed
    pages = json.loads((folder / "sample_pages.json").read_text())
    assert [p["page_idx"] for p in pages] == [0, 1, 2]
    for page in pages:
        assert page["ok"] and page["tier"] == "flash" and page["peak_memory_bytes"] == 0
        assert page["seconds"] > 0 and page["retries"] == 0 and page["blocks"] > 0


def test_a_rerun_resumes_and_a_lost_page_is_redone_alone(sample: Path, parsed, tmp_path: Path) -> None:
    _, folder = parsed
    out = tmp_path / "out"
    shutil.copytree(folder.parent.parent, out)
    before = (out / "sample" / "flash" / "sample.md").read_text()
    # As if the run had been killed before page 2's checkpoint was written.
    (out / "sample" / "flash" / ".checkpoints" / "page_00001.json").unlink()
    again = parse_documents([sample], ParseOptions(out_dir=out), FLASH)
    records = again.files[0].pages
    assert [(r.page_idx, r.resumed) for r in records] == [(0, True), (1, False), (2, True)]
    assert (out / "sample" / "flash" / "sample.md").read_text() == before
    forced = parse_documents([sample], ParseOptions(out_dir=out, force=True), FLASH)
    assert not any(r.resumed for r in forced.files[0].pages)


def test_checkpoints_from_another_input_are_not_reused(sample: Path, tmp_path: Path) -> None:
    doc = tmp_path / "doc.pdf"
    shutil.copy(sample, doc)
    parse_documents([doc], ParseOptions(out_dir=tmp_path / "out", pages=PageSelection.parse("1")), FLASH)
    pdf_with_pages(doc, ["text:A different document"])
    again = parse_documents([doc], ParseOptions(out_dir=tmp_path / "out"), FLASH)
    assert "starting over" in " ".join(again.files[0].notes)
    assert "A different document" in (tmp_path / "out" / "doc" / "flash" / "doc.md").read_text()


def test_a_scanned_page_is_reported_as_needing_the_vlm_tier_not_emitted_empty(tmp_path: Path) -> None:
    doc = pdf_with_pages(tmp_path / "mixed.pdf", ["text:Chapter One", "scan", "blank", "text:Chapter Two"])
    report = parse_documents([doc], ParseOptions(out_dir=tmp_path / "out"), FLASH)
    result = report.files[0]
    assert result.status is Status.partial and report.exit_code == 1
    assert [(r.page_idx, r.ok) for r in result.pages] == [(0, True), (1, False), (2, True), (3, True)]
    assert "no text layer: needs the vlm tier" in result.pages[1].error
    md = (tmp_path / "out" / "mixed" / "flash" / "mixed.md").read_text()
    assert "Chapter One" in md and "Chapter Two" in md
    assert "<!-- page 2 not converted: no text layer: needs the vlm tier" in md
    items = json.loads((tmp_path / "out" / "mixed" / "flash" / "mixed_content_list.json").read_text())
    assert {i["page_idx"] for i in items} == {0, 3}


def test_bad_inputs_fail_alone_with_a_clear_message(sample: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.pdf").write_bytes(b"")
    (bad / "notes.pdf").write_text("meeting notes, not a PDF")
    (bad / "broken.pdf").write_bytes(sample.read_bytes()[:2000])
    encrypted = encrypted_pdf(bad / "locked.pdf", "s3cret")
    zero_page_pdf(bad / "zero.pdf")
    png_header_only(bad / "huge.png", 20000, 20000)
    inputs = [bad / n for n in ("empty.pdf", "notes.pdf", "broken.pdf", "locked.pdf", "zero.pdf", "huge.png")]
    report = parse_documents([*inputs, bad / "missing.pdf", sample], ParseOptions(out_dir=tmp_path / "out"), FLASH)
    errors = {f.path.name: " ".join(f.errors) for f in report.files}
    assert "empty (0 bytes)" in errors["empty.pdf"]
    assert "not a PDF" in errors["notes.pdf"] and "looks like text" in errors["notes.pdf"]
    assert "corrupt" in errors["broken.pdf"]
    assert "encrypted" in errors["locked.pdf"] and "--password" in errors["locked.pdf"]
    assert "has no pages" in errors["zero.pdf"]
    assert "20000×20000" in errors["huge.png"] and "downscale" in errors["huge.png"]
    assert "does not exist" in errors["missing.pdf"]
    assert report.files[-1].status is Status.success  # the good file still went through
    assert report.status is Status.partial and report.exit_code == 1
    unlocked = parse_documents([encrypted], ParseOptions(out_dir=tmp_path / "out", password="s3cret"), FLASH)
    assert unlocked.exit_code == 0
    assert "Quarterly figures" in (tmp_path / "out" / "locked" / "flash" / "locked.md").read_text()
    wrong = parse_documents([encrypted], ParseOptions(out_dir=tmp_path / "out2", password="nope"), FLASH)
    assert "does not open it" in wrong.files[0].errors[0]


def test_a_page_range_of_a_1000_page_pdf_parses_only_those_pages(tmp_path: Path) -> None:
    long_pdf = many_pages_pdf(tmp_path / "long.pdf", 1000)
    report = parse_documents([long_pdf], ParseOptions(out_dir=tmp_path / "out", pages=PageSelection.parse("2-3,999")),
                             FLASH)
    assert report.exit_code == 0 and [r.page_idx for r in report.files[0].pages] == [1, 2, 998]
    md = (tmp_path / "out" / "long" / "flash" / "long.md").read_text()
    assert "Page number 2 " in md and "Page number 999 " in md and "Page number 4 " not in md
    outside = parse_documents([long_pdf], ParseOptions(out_dir=tmp_path / "out", pages=PageSelection.parse("1001-")),
                              FLASH)
    assert outside.files[0].status is Status.failure and "selects none of its 1000 pages" in outside.files[0].errors[0]
