"""How `mineru-fit parse` looks: a rich progress bar with pages/s and GPU memory, and the summary."""

from __future__ import annotations

import time
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from mineru_fit.parsing.observer import ParseObserver
from mineru_fit.parsing.results import FileResult, PageRecord, ParseReport, Status
from mineru_fit.units import human


class PagesPerSecond(ProgressColumn):
    """Pages converted in this run per second of this run (resumed pages do not count)."""

    def render(self, task: Task) -> Text:
        done = task.fields.get("done_now", 0)
        started = task.fields.get("started_s")
        if not done or started is None:
            return Text("– pages/s", style="dim")
        return Text(f"{done / max(1e-6, time.perf_counter() - started):.2f} pages/s", style="cyan")


class RichObserver(ParseObserver):
    """Draws the run on stderr; stdout stays free for --json."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            PagesPerSecond(), TextColumn("{task.fields[gpu]}", style="magenta"), TimeElapsedColumn(),
            console=console, disable=not enabled, transient=False,
        )
        self.task = self.progress.add_task("parsing", total=0, gpu="", done_now=0, started_s=None)

    def __enter__(self) -> "RichObserver":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def file_started(self, name: str, pages: int, resumed: int) -> None:
        task = self.progress.tasks[0]
        self.progress.update(self.task, total=(task.total or 0) + pages, advance=resumed, description=escape(name))
        if task.fields.get("started_s") is None:
            self.progress.update(self.task, started_s=time.perf_counter())

    def page_finished(self, name: str, record: PageRecord) -> None:
        done = self.progress.tasks[0].fields.get("done_now", 0) + 1
        self.progress.update(self.task, advance=1, done_now=done)
        if not record.ok:
            self.progress.console.print(f"[yellow]{escape(name)} page {record.page_idx + 1}:[/] {escape(record.error or '')}",
                                        soft_wrap=True, highlight=False)

    def status(self, text: str) -> None:
        self.progress.console.print(f"[dim]{escape(text)}[/]", soft_wrap=True, highlight=False)

    def memory(self, used_bytes: Optional[int]) -> None:
        self.progress.update(self.task, gpu=f"GPU {human(used_bytes)}" if used_bytes is not None else "")


_MARK = {Status.success: "[green]✓[/]", Status.partial: "[yellow]![/]", Status.failure: "[red]✗[/]"}


def render_summary(console: Console, report: ParseReport) -> None:
    for result in report.files:
        console.print(_file_line(result), soft_wrap=True, highlight=False)
        for error in result.errors[:10]:
            console.print(f"    [red]{escape(error)}[/]", soft_wrap=True, highlight=False)
        if len(result.errors) > 10:
            console.print(f"    [red]… and {len(result.errors) - 10} more (see {escape(result.name)}_pages.json)[/]")
        for note in result.notes:
            console.print(f"    [dim]note: {escape(note)}[/]", soft_wrap=True, highlight=False)
    rate = report.pages_ok / report.seconds if report.seconds > 0 else 0.0
    console.print(
        f"[bold]{report.status.value}[/]: {report.pages_ok} page(s) converted, {report.pages_failed} not, "
        f"{len(report.files)} file(s) in {report.seconds:.1f} s ({rate:.2f} pages/s, tier {report.tier})",
        highlight=False,
    )


def _file_line(result: FileResult) -> str:
    total = len(result.pages)
    where = f" → {escape(str(result.markdown_path))}" if result.markdown_path else ""
    counts = f"{result.pages_ok}/{total} pages" if total else "not parsed"
    return f"  {_MARK[result.status]} {escape(str(result.path))}: {counts}{where}"
