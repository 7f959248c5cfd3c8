"""Our flash outputs against MinerU 4.0.12's own flash (`mineru.parser.parse(tier="flash")`, docvortex offline) on
the same PDFs: Markdown (as its zip's markdown.md), content_list and the middle JSON's pages must be equal; the
differences docs/mineru4.md lists are the only ones allowed. PDFs made here always; ../shared/eval when present."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("docvortex")
pytest.importorskip("reportlab")
pytest.importorskip("mineru", reason="MinerU 4's own flash comes with the dev extra (mineru==4.0.12)")

from fixtures.documents import pdf_with_pages  # noqa: E402
from mineru_fit.errors import UsageError  # noqa: E402
from mineru_fit.parsing import ParseOptions, TierChoice, parse_documents  # noqa: E402
from mineru_fit.parsing.renderers.export import plan_export  # noqa: E402
from mineru_fit.parsing.sample import write_sample_pdf  # noqa: E402

EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "eval"


def mineru_flash(pdf: Path, out: Path) -> dict[str, Any]:
    """MinerU's flash result as its own writers save it (the zip's files), plus its content_list and the Markdown
    `mineru-kit parse -f markdown` writes (images inline)."""
    from mineru.parser import parse
    from mineru.parser.base import ParseResult
    from mineru.parser.writer import FileBasedDataWriter
    from mineru.render import render_content_list

    result = parse(str(pdf), tier="flash")
    result.save(FileBasedDataWriter(str(out)))
    middle = ParseResult.from_json((out / "middle_json.json").read_text()).middle_json
    return {"markdown": (out / "markdown.md").read_text(), "middle": json.loads((out / "middle_json.json").read_text()),
            "content_list": render_content_list(middle), "inline_markdown": result.markdown()}


def read_ours(folder: Path, name: str) -> dict[str, Any]:
    return {"markdown": (folder / f"{name}.md").read_text(), "middle": json.loads((folder / f"{name}_middle.json").read_text()),
            "content_list": json.loads((folder / f"{name}_content_list.json").read_text())}


def ours(pdf: Path, out: Path) -> dict[str, Any]:
    report = parse_documents([pdf], ParseOptions(out_dir=out), TierChoice("flash", "test"))
    folder = report.files[0].output_dir
    assert folder is not None and report.files[0].status.value == "success", report.to_dict()
    return read_ours(folder, report.files[0].name)


def _pages(middle: dict[str, Any]) -> list[Any]:
    return middle["pages"]


def assert_same(theirs: dict[str, Any], mine: dict[str, Any]) -> None:
    """Equal up to what docs/mineru4.md lists: the producer/extension notes and the Markdown's final newline."""
    assert mine["markdown"].rstrip("\n") == theirs["markdown"].rstrip("\n")
    assert mine["content_list"] == theirs["content_list"]
    assert _pages(mine["middle"]) == _pages(theirs["middle"])
    assert mine["middle"]["metadata"]["file_suffix"] == theirs["middle"]["metadata"]["file_suffix"] == "pdf"


@pytest.fixture(scope="module")
def made_here(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pdfs")
    return {"sample": write_sample_pdf(folder / "sample.pdf"),
            "short": pdf_with_pages(folder / "short.pdf", ["text:First page of two", "text:Second page of two"])}


@pytest.fixture(scope="module")
def theirs(made_here: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """MinerU 4's own flash, run once per PDF for every test here."""
    out = tmp_path_factory.mktemp("mineru")
    return {name: mineru_flash(pdf, out / name) for name, pdf in made_here.items()}


def mineru_fit_parse(*args: str) -> None:
    run = subprocess.run([str(Path(sys.executable).parent / "mineru-fit"), "parse", *args, "--tier", "flash",
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_parse_f_markdown_writes_what_mineru4_writes_and_every_output_matches_its_flash(
        made_here: dict[str, Path], theirs: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """`mineru-fit parse -f markdown -o x.md` writes what `mineru-kit parse -f markdown -o x.md` writes, and the full
    layout kept beside it holds MinerU 4's Markdown, content_list and middle JSON."""
    mineru_fit_parse(str(made_here["sample"]), "-f", "markdown", "-o", str(tmp_path / "x.md"))
    assert (tmp_path / "x.md").read_text() == theirs["sample"]["inline_markdown"]  # images inline, as MinerU's
    assert_same(theirs["sample"], read_ours(tmp_path / ".mineru-fit" / "sample" / "flash", "sample"))


def test_parse_f_zip_into_a_folder_holds_mineru4_members_and_matches_its_flash(
        made_here: dict[str, Path], theirs: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    mineru_fit_parse(str(made_here["short"]), "-f", "zip", "-o", str(tmp_path / "out"))
    names = zipfile.ZipFile(tmp_path / "out" / "short.zip").namelist()
    assert {"markdown.md", "middle_json.json", "structured_content.json"} <= set(names)
    work = tmp_path / "out" / ".mineru-fit" / "short" / "flash"
    assert (work / "short_pages.json").is_file()  # our extras stay
    assert_same(theirs["short"], read_ours(work, "short"))
    with pytest.raises(UsageError, match="names one file"):  # `-o a.zip` for two inputs: exit 2 with this line
        plan_export(tmp_path / "a.zip", "zip", [made_here["sample"], made_here["short"]])


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
