"""Renderers write what the builders made: Markdown and MinerU's JSON files."""
