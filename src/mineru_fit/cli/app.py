"""The Typer app and the one place errors become exit codes."""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape
from rich.console import Console

from mineru_fit import __version__
from mineru_fit.errors import MineruFitError

app = typer.Typer(
    name="mineru-fit",
    help="Run MinerU2.5 document parsing on the GPU you have: plan memory, serve, parse, monitor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mineru-fit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens (INFO)."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    # Each command module adds itself to `app`; imported here so the modules stay small.
    from mineru_fit.cli import commands  # noqa: F401


def main() -> None:
    """Console-script entry: one line and an exit code for our errors, never a traceback."""
    _register()
    try:
        app()  # standalone: click reports its own usage errors with exit code 2
    except MineruFitError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
