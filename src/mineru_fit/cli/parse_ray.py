"""`mineru-fit parse --ray`: hand the run to scale/ and show it as a plain parse is shown, plus each actor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import typer
from rich.console import Console
from rich.markup import escape

from mineru_fit.cli.parse_view import RichObserver, render_summary
from mineru_fit.errors import UsageError
from mineru_fit.parsing import ParseOptions


def parse_on_cluster(console: Console, inputs: Sequence[Path], options: ParseOptions, address: str, *, tier: str,
                     server: Optional[str], model_id: str, model_dir: Optional[Path], request: Any, engine: str,
                     max_new_tokens: Optional[int], as_json: bool, progress: bool) -> int:
    """Run the parse on Ray; print the plan and pages/s of every actor; the exit code."""
    from mineru_fit.scale import ENGINES, RayJob, parse_on_ray

    if engine not in ENGINES:
        raise UsageError(f"--ray-engine {engine}: use {', '.join(ENGINES)}")
    job = RayJob(address=address, tier=tier, model_id=model_id, model_dir=model_dir, request=request, engine=engine,
                 server_url=server, max_new_tokens=max_new_tokens)

    def say(text: str) -> None:
        console.print(f"[bold]{escape(text)}[/]" if text.startswith("tier:") else escape(text),
                      soft_wrap=True, highlight=False)

    with RichObserver(console, enabled=progress) as observer:
        result = parse_on_ray(inputs, options, job, observer=observer, say=say)
    if as_json:
        body = result.report.to_dict()
        body["actors"] = [{"label": a.label, "plan": a.summary, "pages": a.pages, "pages_per_s": round(a.pages_per_s, 3),
                           "restarts": a.restarts, **({"info": a.info} if a.info else {})} for a in result.actors]
        typer.echo(json.dumps(body, indent=2))
    render_summary(console, result.report)
    for actor in result.actors:
        console.print(f"  [cyan]{escape(actor.line())}[/]", soft_wrap=True, highlight=False)
    for note in result.report.notes:
        console.print(f"  [red]{escape(note)}[/]", soft_wrap=True, highlight=False)
    return result.report.exit_code
