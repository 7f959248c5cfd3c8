"""Our flash outputs against MinerU 4.0.12's own flash (`mineru.parser.parse(tier="flash")`, docvortex offline) on
the same PDFs: Markdown (as its zip's markdown.md), content_list and the middle JSON's pages must be equal; the
differences docs/mineru4.md lists are the only ones allowed. PDFs made here always; ../shared/eval when present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("docvortex")
pytest.importorskip("reportlab")
pytest.importorskip("mineru", reason="MinerU 4's own flash comes with the dev extra (mineru==4.0.12)")

from fixtures.documents import pdf_with_pages  # noqa: E402
from mineru_fit.parsing import ParseOptions, TierChoice, parse_documents  # noqa: E402
from mineru_fit.parsing.sample import write_sample_pdf  # noqa: E402

EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "eval"


def mineru_flash(pdf: Path, out: Path) -> dict[str, Any]:
    """MinerU's flash result as its own writers save it (the zip's files), plus its content_list."""
    from mineru.parser import parse
    from mineru.parser.base import ParseResult
    from mineru.parser.writer import FileBasedDataWriter
    from mineru.render import render_content_list

    result = parse(str(pdf), tier="flash")
    result.save(FileBasedDataWriter(str(out)))
    middle = ParseResult.from_json((out / "middle_json.json").read_text()).middle_json
    return {"markdown": (out / "markdown.md").read_text(), "middle": json.loads((out / "middle_json.json").read_text()),
            "content_list": render_content_list(middle)}


def ours(pdf: Path, out: Path) -> dict[str, Any]:
    report = parse_documents([pdf], ParseOptions(out_dir=out), TierChoice("flash", "test"))
    folder = report.files[0].output_dir
    assert folder is not None and report.files[0].status.value == "success", report.to_dict()
    name = report.files[0].name
    return {"markdown": (folder / f"{name}.md").read_text(), "middle": json.loads((folder / f"{name}_middle.json").read_text()),
            "content_list": json.loads((folder / f"{name}_content_list.json").read_text())}


def _pages(middle: dict[str, Any]) -> list[Any]:
    return middle["pages"]


def assert_same(theirs: dict[str, Any], mine: dict[str, Any]) -> None:
    """Equal up to what docs/mineru4.md lists: the producer/extension notes and the Markdown's final newline."""
    assert mine["markdown"].rstrip("\n") == theirs["markdown"].rstrip("\n")
    assert mine["content_list"] == theirs["content_list"]
    assert _pages(mine["middle"]) == _pages(theirs["middle"])
    assert mine["middle"]["metadata"]["file_suffix"] == theirs["middle"]["metadata"]["file_suffix"] == "pdf"


def test_flash_matches_mineru4_flash_on_pdfs_made_here(tmp_path: Path) -> None:
    sample = write_sample_pdf(tmp_path / "sample.pdf")
    short = pdf_with_pages(tmp_path / "short.pdf", ["text:First page of two", "text:Second page of two"])
    for pdf in (sample, short):
        assert_same(mineru_flash(pdf, tmp_path / "mineru" / pdf.stem), ours(pdf, tmp_path / "ours"))


@pytest.mark.skipif(not EVAL.is_dir(), reason="no ../shared/eval PDFs here (CI has none)")
def test_flash_matches_mineru4_flash_on_the_eval_pdfs(tmp_path: Path) -> None:
    from docvortex.document.pdf import PDFDocument

    checked = 0
    for pdf in sorted(EVAL.glob("*.pdf")):
        document = PDFDocument(pdf.read_bytes())
        try:
            scanned = document.classify() == "ocr"
        finally:
            document.close()
        if scanned:  # MinerU's flash hands such a PDF to its OCR models (basic); ours reports the pages instead
            continue
        assert_same(mineru_flash(pdf, tmp_path / "mineru" / pdf.stem), ours(pdf, tmp_path / "ours"))
        checked += 1
    assert checked, f"no born-digital PDF in {EVAL}"


def test_parse_f_writes_mineru4_files_where_o_says(tmp_path: Path) -> None:
    """`mineru-fit parse -f FORMAT -o x.ext` writes what `mineru-kit parse -f FORMAT -o x.ext` writes."""
    import subprocess
    import sys
    import zipfile

    sample = write_sample_pdf(tmp_path / "sample.pdf")
    cli = str(Path(sys.executable).parent / "mineru-fit")
    run = subprocess.run([cli, "parse", str(sample), "--tier", "flash", "-f", "markdown", "-o", str(tmp_path / "x.md"),
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    from mineru.parser import parse

    assert (tmp_path / "x.md").read_text() == parse(str(sample), tier="flash").markdown()  # images inline, as MinerU's
    run = subprocess.run([cli, "parse", str(sample), "--tier", "flash", "-f", "zip", "-o", str(tmp_path / "out"),
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    names = zipfile.ZipFile(tmp_path / "out" / "sample.zip").namelist()
    assert {"markdown.md", "middle_json.json", "structured_content.json"} <= set(names)
    assert (tmp_path / "out" / ".mineru-fit" / "sample" / "flash" / "sample_pages.json").is_file()  # our extras stay
    two = subprocess.run([cli, "parse", str(sample), str(sample), "-f", "zip", "-o", str(tmp_path / "a.zip")],
                         capture_output=True, text=True, timeout=120)
    assert two.returncode == 2 and "names one file" in two.stderr
