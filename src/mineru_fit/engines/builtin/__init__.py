"""The built-in engine: MinerU2.5 on transformers behind an OpenAI-compatible API.

Importing this package imports no torch; `run_server` does, when it starts.
"""

from mineru_fit.engines.builtin.options import BuiltinOptions


def run_server(options: BuiltinOptions) -> None:
    """Load the model per `options` and serve until interrupted (blocks)."""
    from mineru_fit.engines.builtin.server import serve

    serve(options)


__all__ = ["BuiltinOptions", "run_server"]
