"""`mineru-fit api`, `mineru-fit ui` and the guide's `mineru-fit start api|gradio`: the parse service.

Each plans an engine for this machine (the built-in one in-process, or SGLang/vLLM under the
supervisor) unless --server names one, serves the API (and the UI), and stops the engine it
started on exit. Without a model here the service runs the flash tier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from mineru_fit.cli.app import app
from mineru_fit.cli.options import (
    Concurrency, DryRun, Dtype, Engine, EngineChoice, Gpu, GpuMemoryUtilization, Gpus, HealthTimeout,
    Level, LevelChoice, LoadIn4bit, LoadIn8bit, MaxAttempts, MaxModelLen, MemFractionStatic, Model,
    Simulate, Vram,
)
from mineru_fit.cli.serve_run import ServeArgs
from mineru_fit.settings import load_settings

err_console = Console(stderr=True)
start_app = typer.Typer(help="Start the guide's services with an engine fitted to this machine.", no_args_is_help=True)
app.add_typer(start_app, name="start")


def _command(ui: bool, default_port: int) -> Callable[..., None]:
    def command(
        host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1: this machine only)."),
        port: int = typer.Option(default_port, "--port", min=1, max=65535, help="Port of the service."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Jobs, uploads and outputs "
                                                "(default <state dir>/service)."),
        workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Jobs at once (default: the plan's "
                                              "concurrency)."),
        max_queue: int = typer.Option(256, "--max-queue", min=0, help="Jobs that may wait; more get 503 + Retry-After."),
        max_upload_mb: float = typer.Option(200.0, "--max-upload-mb", help="MiB per request (413 above)."),
        max_pages: int = typer.Option(1000, "--max-pages", min=1, help="Pages per job (422 above)."),
        max_files: int = typer.Option(100, "--max-files", min=1, help="Files per job (413 above)."),
        job_timeout: float = typer.Option(3600.0, "--job-timeout", min=1, help="Seconds before a job is stopped."),
        retention_hours: float = typer.Option(168.0, "--retention-hours", min=0,
                                              help="Finished jobs are deleted after this (0: never)."),
        allowed_host: Optional[list[str]] = typer.Option(None, "--allowed-host", help="A Host name the service "
                                                         "answers besides localhost and --host (repeatable; '*': "
                                                         "any). Other names are refused: DNS rebinding."),
        body_timeout: float = typer.Option(30.0, "--body-timeout", min=0.1, help="Seconds an upload may send "
                                           "nothing before it is answered 408 and closed."),
        server: Optional[str] = typer.Option(None, "--server", help="Use this OpenAI-compatible MinerU2.5 server; "
                                             "start none."),
        engine: Engine = EngineChoice.auto,
        level: Level = LevelChoice.auto,
        model: Model = None,
        gpu: Gpu = None,
        vram: Vram = None,
        gpus: Gpus = None,
        simulate: Simulate = None,
        concurrency: Concurrency = None,
        max_model_len: MaxModelLen = None,
        mem_fraction_static: MemFractionStatic = None,
        gpu_memory_utilization: GpuMemoryUtilization = None,
        load_in_4bit: LoadIn4bit = False,
        load_in_8bit: LoadIn8bit = False,
        dtype: Dtype = None,
        engine_port: Optional[int] = typer.Option(None, "--engine-port", min=1, max=65535,
                                                  help="Port of a SGLang/vLLM engine (default 30000)."),
        health_timeout: HealthTimeout = 900.0,
        max_attempts: MaxAttempts = 3,
        dry_run: DryRun = False,
    ) -> None:
        from mineru_fit.cli.service_setup import ServiceArgs, setup_service

        settings = load_settings()
        serve = ServeArgs(
            engine=engine.value, level=level.value, gpu=gpu, vram=vram, gpus=gpus, simulate=simulate, concurrency=concurrency,
            max_model_len=max_model_len,
            mem_fraction_static=mem_fraction_static, gpu_memory_utilization=gpu_memory_utilization,
            load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, dtype=dtype, model=model, port=engine_port,
            dry_run=dry_run, health_timeout_s=health_timeout, max_attempts=max_attempts,
        )
        setup = setup_service(ServiceArgs(
            host=host, port=port, data_dir=data_dir, workers=workers, max_queue=max_queue, max_upload_mb=max_upload_mb,
            max_pages=max_pages, max_files=max_files, job_timeout_s=job_timeout, retention_hours=retention_hours,
            server=server, ui=ui, serve=serve, allowed_hosts=tuple(allowed_host or ()), body_timeout_s=body_timeout,
        ), settings)
        if dry_run:
            for line in setup.lines:
                typer.echo(line)
            return
        for line in setup.lines:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
        from mineru_fit.service.server import run_service

        run_service(setup.config, setup.engine, host=setup.host, port=setup.port, ui=ui, report=_say)

    return command


def _say(text: str) -> None:
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def _register(target: Any, name: str, ui: bool, port: int, doc: str) -> None:
    command = _command(ui, port)
    command.__doc__ = doc
    target.command(name)(command)


_API = "Serve the parse API (mineru-api's /file_parse, durable /tasks) with an engine fitted to this machine."
_UI = "Serve the Gradio UI (and the parse API beside it) with an engine fitted to this machine."
_register(app, "api", False, 8000, _API)
_register(app, "ui", True, 7860, _UI)
_register(start_app, "api", False, 8000, _API)
_register(start_app, "gradio", True, 7860, _UI)
