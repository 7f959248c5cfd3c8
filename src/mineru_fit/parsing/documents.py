"""One input file made ready for a tier: opened, pages chosen, checkpoints read; and finished off."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mineru_fit.errors import InputDocumentError, MineruFitError
from mineru_fit.parsing.checkpoints import PageStore, fingerprint
from mineru_fit.parsing.discover import InputFile
from mineru_fit.parsing.options import ParseOptions
from mineru_fit.parsing.providers import Document, open_document
from mineru_fit.parsing.renderers.outputs import write_document
from mineru_fit.parsing.results import FileResult, PageOutput, PageRecord, Status, file_status


@dataclass
class OpenFile:
    """A file being parsed: what is done, what is left, what failed."""

    input: InputFile
    tier: str
    doc: Document
    out_dir: Path
    store: PageStore
    pages: list[int]                                   # selected, 0-based
    done: dict[int, PageOutput] = field(default_factory=dict)
    failed: dict[int, PageRecord] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[int]:
        return [p for p in self.pages if p not in self.done and p not in self.failed]

    @property
    def resumed(self) -> int:
        return sum(1 for p in self.done.values() if p.record.resumed)

    def emit(self, output: PageOutput) -> None:
        """A page is converted: on disk now (images, then its checkpoint)."""
        self.store.save(output)
        self.done[output.record.page_idx] = output

    def fail(self, record: PageRecord) -> None:
        self.failed[record.page_idx] = record


def failed_file(inp: InputFile, tier: str, error: str) -> FileResult:
    return FileResult(path=inp.path, name=inp.name, tier=tier, status=Status.failure, errors=(error,))


def open_input(inp: InputFile, options: ParseOptions, tier: str, settings: dict[str, Any]) -> "OpenFile | FileResult":
    """Open, select pages and load checkpoints; a FileResult(failure) when the file cannot be parsed."""
    if inp.error:
        return failed_file(inp, tier, inp.error)
    try:
        doc = open_document(inp.path, options.password)
    except InputDocumentError as exc:
        return failed_file(inp, tier, str(exc))
    except MineruFitError:
        raise  # a missing extra is for the whole run
    except Exception as exc:  # whatever a reader library throws: this file fails, the others run
        return failed_file(inp, tier, f"{inp.path} cannot be opened ({type(exc).__name__}: {exc})")
    notes: list[str] = []
    try:
        if options.pages is not None and doc.kind == "pdf":
            pages, note = options.pages.resolve(doc.page_count)
            if note:
                notes.append(note)
        else:
            pages = list(range(doc.page_count))
        out_dir = options.out_dir / inp.name / tier
        store = PageStore(out_dir)
        note = store.prepare(fingerprint(inp.path, tier=tier, **settings), force=options.force)
    except (InputDocumentError, OSError) as exc:
        doc.close()
        message = str(exc) if isinstance(exc, InputDocumentError) else f"{inp.path}: cannot write outputs ({exc})"
        return failed_file(inp, tier, message)
    if note:
        notes.append(note)
    selected = set(pages)
    done = {i: p for i, p in store.done().items() if i in selected}
    if done:
        notes.append(f"{len(done)} page(s) resumed from an earlier run (--force redoes them)")
    return OpenFile(inp, tier, doc, out_dir, store, pages, done, {}, notes)


def finish(file: OpenFile, error: Optional[str] = None) -> FileResult:
    """Write the document's Markdown and JSON from every page, close it, and say how it went."""
    file.doc.close()
    for page_idx in file.todo:  # anything not settled is reported, never skipped
        file.fail(PageRecord(page_idx=page_idx, tier=file.tier, ok=False, seconds=0.0,
                             error=error or "the run stopped before this page"))
    markdown = write_document(file.out_dir, file.input.name, file.done.values(), file.failed.values())
    records = tuple(sorted([p.record for p in file.done.values()] + list(file.failed.values()),
                           key=lambda r: r.page_idx))
    errors = tuple(f"page {r.page_idx + 1}: {r.error}" for r in records if not r.ok)
    return FileResult(
        path=file.input.path, name=file.input.name, tier=file.tier, status=file_status(records), pages=records,
        errors=errors, notes=tuple(file.notes), output_dir=file.out_dir, markdown_path=markdown,
    )


def finish_or_fail(file: OpenFile, error: Optional[str] = None) -> FileResult:
    """finish(), or a failed FileResult when the outputs cannot be written (a full disk, a read-only folder)."""
    try:
        return finish(file, error)
    except OSError as exc:
        file.doc.close()
        return failed_file(file.input, file.tier, f"{file.input.path}: cannot write outputs to {file.out_dir} ({exc})")
