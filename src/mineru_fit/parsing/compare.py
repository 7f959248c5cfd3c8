"""What an optimisation level costs on the user's own pages: parse them at two (or more) levels,
then compare, per block type, the text each level produced (normalized edit distance) and the
pages per second each achieved.

The first level is the reference. Agreement for a block type is 1 − Σ distance / Σ longer length
over the pages, where a page's text of that type is its blocks of that type in reading order:
a page where one level found a block and the other did not counts as a full disagreement.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from mineru_fit.errors import MissingExtraError, UsageError
from mineru_fit.parsing.observer import ParseObserver
from mineru_fit.parsing.options import ParseOptions, VlmSetup
from mineru_fit.parsing.pipeline import parse_documents
from mineru_fit.parsing.results import PageRecord, ParseReport
from mineru_fit.parsing.tiers import TierChoice
from mineru_fit.planner.plan import PlanReport

# content_list fields that carry a block's text, in the order they are compared.
TEXT_FIELDS = ("text", "table_body", "code_body", "image_description", "chart_description")
LIST_FIELDS = ("table_caption", "table_footnote", "image_caption", "image_footnote", "chart_caption",
               "chart_footnote", "code_caption", "code_footnote")


@dataclass(frozen=True)
class LevelSetup:
    """One level to parse at: the flash tier, or the built-in engine at exactly that level."""

    level: str
    tier: TierChoice
    vlm: Optional[VlmSetup] = None


@dataclass(frozen=True)
class LevelRun:
    """What one level produced and how fast."""

    level: str
    pages_ok: int
    pages_failed: int
    seconds: float          # the whole run, model loading included
    work_seconds: float     # first page started to last page finished
    items: tuple[dict[str, Any], ...]
    errors: tuple[str, ...] = ()

    @property
    def pages_per_s(self) -> float:
        return self.pages_ok / self.work_seconds if self.work_seconds > 0 else 0.0


@dataclass(frozen=True)
class TypeAgreement:
    """One block type: how many blocks each level found and how far the texts are from the reference."""

    block_type: str
    blocks: tuple[int, ...]               # per level, reference first
    agreement: tuple[Optional[float], ...]  # per level after the reference: 0..1 (None: no text either side)


@dataclass(frozen=True)
class Comparison:
    levels: tuple[str, ...]
    runs: tuple[LevelRun, ...]
    types: tuple[TypeAgreement, ...]
    overall: tuple[Optional[float], ...]  # per level after the reference, over every block type
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.levels[0],
            "levels": [
                {"level": r.level, "pages_ok": r.pages_ok, "pages_failed": r.pages_failed,
                 "seconds": round(r.seconds, 3), "work_seconds": round(r.work_seconds, 3),
                 "pages_per_s": round(r.pages_per_s, 4), "blocks": len(r.items), "errors": list(r.errors)}
                for r in self.runs
            ],
            "block_types": [
                {"type": t.block_type, "blocks": dict(zip(self.levels, t.blocks)),
                 "agreement": {lvl: _round(a) for lvl, a in zip(self.levels[1:], t.agreement)}}
                for t in self.types
            ],
            "overall_agreement": {lvl: _round(a) for lvl, a in zip(self.levels[1:], self.overall)},
            "notes": list(self.notes),
        }


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)


def block_type(item: dict[str, Any]) -> str:
    """content_list's type, with headings (text that has a text_level) apart from body text."""
    kind = str(item.get("type", "unknown"))
    return "title" if kind == "text" and item.get("text_level") else kind


def block_text(item: dict[str, Any]) -> str:
    parts = [str(item[k]) for k in TEXT_FIELDS if item.get(k)]
    parts += [str(v) for k in LIST_FIELDS for v in (item.get(k) or [])]
    return "\n".join(p.strip() for p in parts if p.strip())


def _page_texts(items: Sequence[dict[str, Any]]) -> dict[tuple[str, int], str]:
    texts: dict[tuple[str, int], list[str]] = {}
    for item in items:
        texts.setdefault((block_type(item), int(item.get("page_idx", 0))), []).append(block_text(item))
    return {key: "\n".join(parts) for key, parts in texts.items()}


def _agreement(reference: dict[tuple[str, int], str], other: dict[tuple[str, int], str],
               keys: Sequence[tuple[str, int]]) -> Optional[float]:
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError as exc:
        raise MissingExtraError("rapidfuzz", "engine") from exc

    distance = longest = 0
    for key in keys:
        a, b = reference.get(key, ""), other.get(key, "")
        distance += Levenshtein.distance(a, b)
        longest += max(len(a), len(b))
    return None if longest == 0 else 1.0 - distance / longest


def agreement_by_type(runs: Sequence[LevelRun]) -> tuple[tuple[TypeAgreement, ...], tuple[Optional[float], ...]]:
    """Per block type and overall, each later level against the first."""
    texts = [_page_texts(r.items) for r in runs]
    keys = sorted(set().union(*texts))
    types = sorted({k[0] for k in keys})
    rows = []
    for kind in types:
        kind_keys = [k for k in keys if k[0] == kind]
        counts = tuple(sum(1 for i in r.items if block_type(i) == kind) for r in runs)
        rows.append(TypeAgreement(kind, counts, tuple(_agreement(texts[0], t, kind_keys) for t in texts[1:])))
    overall = tuple(_agreement(texts[0], t, keys) for t in texts[1:])
    return tuple(rows), overall


class _Timing(ParseObserver):
    """When page work began and ended (a page's record says how long it ran before it finished),
    and the run's status lines passed on."""

    def __init__(self, say: Optional[Callable[[str], None]] = None) -> None:
        self.first_start: Optional[float] = None
        self.last_finish: Optional[float] = None
        self.say = say

    def page_finished(self, name: str, record: PageRecord) -> None:
        now = time.perf_counter()
        start = now - record.seconds
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.last_finish = now

    def status(self, text: str) -> None:
        if self.say is not None:
            self.say(text)


def level_setups(report: PlanReport, levels: Sequence[str], model_dir: Optional[Path], *,
                 max_new_tokens: Optional[int] = None, device: Optional[str] = None,
                 model_name: str = "") -> tuple[list[LevelSetup], list[str]]:
    """Each level asked for, as the built-in engine at exactly that level (no step-down: a level that
    ran out of memory and stepped down would no longer be the level compared), or the flash tier."""
    if len(levels) < 2:
        raise UsageError("--levels needs two levels or more, e.g. --levels none,extreme")
    if len(set(levels)) != len(levels):
        raise UsageError(f"--levels {','.join(levels)} names a level twice — name each once")
    by_level = {p.level: p for p in report.levels}
    setups, notes = [], []
    for level in levels:
        if level not in by_level:
            names = ", ".join(by_level)
            raise UsageError(f"--levels: {level!r} is not a level — use {names}")
        if level == "flash":
            setups.append(LevelSetup(level, TierChoice("flash", "compared level")))
            continue
        if model_dir is None:
            raise UsageError(f"level {level} needs a MinerU2.5 model here — mineru-fit models download, or --model DIR")
        plan = by_level[level]
        if not plan.fits:
            notes.append(f"{level} does not fit the budget here ({plan.problems[0] if plan.problems else 'predicted peak too high'}): "
                         "its pages may run out of memory")
        setups.append(LevelSetup(level, TierChoice("vlm", "compared level"), VlmSetup(
            model_dir=model_dir, levels=(plan,), device=device, max_new_tokens=max_new_tokens, model_name=model_name)))
    return setups, notes


def _content_list(report: ParseReport) -> tuple[dict[str, Any], ...]:
    items: list[dict[str, Any]] = []
    for offset, result in enumerate(report.files):
        if result.output_dir is None:
            continue
        path = result.output_dir / f"{result.name}_content_list.json"
        if path.is_file():
            # Pages of several files stay apart: file k's pages are numbered after file k-1's.
            for item in json.loads(path.read_text(encoding="utf-8")):
                items.append({**item, "page_idx": offset * 1_000_000 + int(item.get("page_idx", 0))})
    return tuple(items)


def compare_levels(paths: Sequence[Path], setups: Sequence[LevelSetup], options: ParseOptions, *,
                   notes: Sequence[str] = (), say: Optional[Callable[[str], None]] = None) -> Comparison:
    """Parse `paths` once per level (into <out>/<level>/, from scratch) and compare what came out."""
    runs = []
    for setup in setups:
        timing = _Timing((lambda text, level=setup.level: say(f"{level}: {text}")) if say else None)
        level_options = ParseOptions(out_dir=options.out_dir / setup.level, pages=options.pages,
                                     password=options.password, dpi=options.dpi, force=True)
        started = time.perf_counter()
        report = parse_documents(paths, level_options, setup.tier, vlm=setup.vlm, observer=timing)
        seconds = time.perf_counter() - started
        work = (timing.last_finish - timing.first_start) if timing.first_start is not None else seconds
        run = LevelRun(
            level=setup.level, pages_ok=report.pages_ok, pages_failed=report.pages_failed, seconds=seconds,
            work_seconds=max(work, 1e-9), items=_content_list(report),
            errors=tuple(e for f in report.files for e in f.errors),
        )
        if say:
            say(f"{setup.level}: {run.pages_ok} pages in {run.work_seconds:.1f} s ({run.pages_per_s:.2f} pages/s), "
                f"{run.seconds:.1f} s with loading")
        runs.append(run)
    types, overall = agreement_by_type(runs)
    return Comparison(levels=tuple(s.level for s in setups), runs=tuple(runs), types=types, overall=overall,
                      notes=tuple(notes))
