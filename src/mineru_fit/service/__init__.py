"""The parse service: a FastAPI API compatible with mineru-api, durable jobs in SQLite, a Gradio UI.

Jobs run in a bounded pool of worker processes (the plan's concurrency); the vlm tier reaches
the engine the service started (or was pointed at) over HTTP. Importing this package imports
neither FastAPI nor Gradio: the modules that need them do.
"""

from mineru_fit.service.config import EngineInfo, Limits, ServiceConfig, default_data_dir

__all__ = ["EngineInfo", "Limits", "ServiceConfig", "default_data_dir"]
