"""The `mineru-fit` command: thin — parse flags, call a layer, render with rich or --json."""

from mineru_fit.cli.app import app, main

__all__ = ["app", "main"]
