"""Builders turn an engine's output (MinerU2.5 blocks, docvortex's middle JSON) into MinerU's content_list items."""
