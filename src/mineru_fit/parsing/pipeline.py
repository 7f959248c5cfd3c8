"""parse_documents: inputs -> tier -> pages -> outputs, one FileResult per input, never stopping at a bad one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from mineru_fit.errors import MineruFitError, UsageError
from mineru_fit.parsing.discover import InputFile, discover
from mineru_fit.parsing.documents import finish_or_fail, open_input
from mineru_fit.parsing.observer import ParseObserver
from mineru_fit.parsing.options import ParseOptions, VlmSetup
from mineru_fit.parsing.results import FileResult, ParseReport
from mineru_fit.parsing.tiers import TierChoice


def _flash_file(inp: InputFile, options: ParseOptions, observer: ParseObserver) -> FileResult:
    from mineru_fit.parsing.flash import parse_flash

    opened = open_input(inp, options, "flash", {})
    if isinstance(opened, FileResult):
        return opened
    observer.file_started(inp.name, len(opened.pages), opened.resumed)
    todo = opened.todo

    def emit(output: Any) -> None:
        opened.emit(output)
        observer.page_finished(inp.name, output.record)

    def fail(record: Any) -> None:
        opened.fail(record)
        observer.page_finished(inp.name, record)

    error: Optional[str] = None
    try:
        if todo:
            parse_flash(opened.doc.source_for_flash(), opened.doc, todo, emit, fail)
    except OSError as exc:  # e.g. the disk filled up: this file stops, the others still run
        error = f"cannot write outputs ({exc})"
    except MineruFitError:
        raise  # a missing extra is for the whole run, not this file
    except Exception as exc:  # never a traceback for one file: its pages say what went wrong
        error = f"flash failed on this file: {type(exc).__name__}: {exc}"
    return finish_or_fail(opened, error)


def _backend(setup: VlmSetup) -> Any:
    from mineru_fit.parsing.vlm.backends import InProcessBackend, ServerBackend

    if setup.server_url:
        return ServerBackend(setup.server_url, concurrency=setup.concurrency, max_new_tokens=setup.max_new_tokens,
                             max_model_len=setup.max_model_len, device_mode=setup.device_mode)
    if setup.model_dir is None or not setup.levels:
        raise UsageError("the vlm tier needs --server URL or a model with a plan")
    return InProcessBackend(setup.levels, setup.model_dir, device=setup.device, max_new_tokens=setup.max_new_tokens,
                            faults=setup.faults)


def _flash_files(inputs: Sequence[InputFile], options: ParseOptions, observer: ParseObserver) -> list[FileResult]:
    results = []
    for inp in inputs:
        result = _flash_file(inp, options, observer)
        observer.file_finished(result)
        results.append(result)
    return results


async def parse_documents_async(paths: Sequence[Path], options: ParseOptions, tier: TierChoice, *,
                                vlm: Optional[VlmSetup] = None, observer: Optional[ParseObserver] = None) -> ParseReport:
    """parse_documents for a caller that already runs an event loop (the parse API); flash runs in a thread."""
    observer = observer or ParseObserver()
    started = time.perf_counter()
    inputs = discover(paths)
    if tier.tier == "flash":
        results = await asyncio.to_thread(_flash_files, inputs, options, observer)
    else:
        from mineru_fit.parsing.vlm.run import VlmRun

        setup = vlm or VlmSetup()
        settings = {"dpi": options.dpi, "model": setup.model_name or setup.server_url or ""}
        results = await VlmRun(inputs, options, _backend(setup), observer, settings).run()
    return ParseReport(files=tuple(results), tier=tier.tier, tier_reason=tier.reason,
                       seconds=time.perf_counter() - started)


def parse_documents(paths: Sequence[Path], options: ParseOptions, tier: TierChoice, *,
                    vlm: Optional[VlmSetup] = None, observer: Optional[ParseObserver] = None) -> ParseReport:
    """Parse every PDF/image in `paths` (files or folders) with `tier`; results per file, in input order."""
    if tier.tier == "flash":  # no event loop: docvortex is synchronous
        observer = observer or ParseObserver()
        started = time.perf_counter()
        results = _flash_files(discover(paths), options, observer)
        return ParseReport(files=tuple(results), tier=tier.tier, tier_reason=tier.reason,
                           seconds=time.perf_counter() - started)
    return asyncio.run(parse_documents_async(paths, options, tier, vlm=vlm, observer=observer))


__all__ = ["parse_documents", "parse_documents_async"]
