"""From `start api|gradio` flags to what the service runs: its engine (from the plan, or --server) and its config."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from mineru_fit.cli.serve_run import ServeArgs, level_runs, plan_serve, warning_lines
from mineru_fit.errors import UsageError
from mineru_fit.planner import PlanReport
from mineru_fit.planner.constants import DEFAULT_CONCURRENCY
from mineru_fit.service.config import EngineInfo, Limits, ServiceConfig, default_data_dir
from mineru_fit.service.engine import EngineSpec
from mineru_fit.service.hosts import allowed_hosts_for
from mineru_fit.settings import Settings
from mineru_fit.units import MIB, human


@dataclass(frozen=True)
class ServiceArgs:
    """Every flag of `mineru-fit api|ui|start`; None: not given."""

    host: Optional[str] = None
    port: int = 8000
    data_dir: Optional[Path] = None
    workers: Optional[int] = None
    max_queue: int = 256
    max_upload_mb: float = 200.0
    max_pages: int = 1000
    max_files: int = 100
    job_timeout_s: float = 3600.0
    retention_hours: float = 168.0
    server: Optional[str] = None
    allowed_hosts: tuple[str, ...] = ()  # Host names served beside localhost and the bind address ('*': any)
    body_timeout_s: float = 30.0
    ui: bool = False                     # the Gradio UI beside the API
    serve: ServeArgs = ServeArgs()       # the engine's flags, as `mineru-fit serve` takes them


@dataclass(frozen=True)
class ServiceSetup:
    config: ServiceConfig
    engine: EngineSpec
    host: str
    port: int
    lines: tuple[str, ...]               # what will run, for the console and --dry-run


def _model_dir(model: Optional[str], settings: Settings) -> tuple[str, Optional[Path]]:
    from mineru_fit.models import where
    from mineru_fit.models.cache import is_model_dir

    model_id = model or settings.model
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not is_model_dir(path):
            raise UsageError(f"--model {model_id}: not a model folder (config.json and model.safetensors expected)")
        return model_id, path
    return model_id, where(model_id, models_dir=settings.models_dir)


def _engine(args: ServiceArgs, settings: Settings) -> tuple[EngineSpec, Optional[PlanReport], list[str]]:
    serve = args.serve
    if args.server:
        if not args.server.startswith(("http://", "https://")):
            raise UsageError(f"--server {args.server}: give the engine's URL, e.g. http://127.0.0.1:30000")
        return EngineSpec("server", f"--server {args.server}", server_url=args.server.rstrip("/")), None, []
    model_id, model_dir = _model_dir(serve.model, settings)
    report, engine_reason = plan_serve(replace(serve, model=str(model_dir) if model_dir else model_id), settings,
                                       allow_flash=True)
    plan = report.plan
    if serve.level == "flash":
        return EngineSpec("none", "--level flash: no model"), report, []
    if model_dir is None and serve.engine not in ("sglang", "vllm"):  # those two fetch a hub id themselves
        return EngineSpec("none", f"no MinerU2.5 model here ({model_id} is not downloaded; "
                                  "`mineru-fit models download` fetches it)"), report, []
    if plan.level == "flash":
        return EngineSpec("none", f"no {plan.engine} level fits ({report.reason})"), report, []
    if plan.engine == "builtin":
        from mineru_fit.engines.builtin import BuiltinOptions

        device = None
        if plan.device.device == "cuda":
            device = f"cuda:{serve.gpu}" if serve.gpu is not None else settings.device_mode
        options = BuiltinOptions.from_plan(plan, str(model_dir), host="127.0.0.1", device=device,
                                           **serve.builtin_overrides)
        reason = f"built-in engine in this process ({engine_reason}), level {plan.level}: {report.reason}"
        return EngineSpec("builtin", reason, builtin=options, plan=plan), report, []
    runs, notes = level_runs(report, settings, max_attempts=serve.max_attempts, dry_run=serve.dry_run)
    reason = f"{plan.engine} ({engine_reason}), level {plan.level}: {report.reason}"
    return (EngineSpec("supervised", reason, runs=tuple(runs), plan=plan, health_timeout_s=serve.health_timeout_s),
            report, notes)


def setup_service(args: ServiceArgs, settings: Settings) -> ServiceSetup:
    """Plan the engine and size the service: workers = the plan's concurrency unless --workers says."""
    if args.max_upload_mb <= 0 or args.max_pages < 1 or args.max_files < 1 or args.body_timeout_s <= 0:
        raise UsageError("--max-upload-mb, --max-pages, --max-files and --body-timeout must be positive")
    engine, report, notes = _engine(args, settings)
    if args.workers is not None:
        workers, why = args.workers, "--workers"
    elif report is not None:
        workers = report.plan.batch_size or DEFAULT_CONCURRENCY
        why = f"the {report.plan.engine} plan's concurrency at level {report.plan.level}"
    else:
        workers, why = args.serve.concurrency or DEFAULT_CONCURRENCY, "--concurrency" if args.serve.concurrency else "default"
    token = settings.api_token.get_secret_value() if settings.api_token else None
    host = args.host or settings.host
    allowed = allowed_hosts_for(host, args.allowed_hosts)
    config = ServiceConfig(
        data_dir=(args.data_dir or default_data_dir()).expanduser(), workers=workers, max_queue=args.max_queue,
        limits=Limits(max_upload_bytes=int(args.max_upload_mb * MIB), max_pages=args.max_pages,
                      max_files=args.max_files),
        token=token or None, job_timeout_s=args.job_timeout_s, retention_s=args.retention_hours * 3600,
        engine=EngineInfo(kind=engine.kind, reason=engine.reason), device_mode=settings.device_mode,
        allowed_hosts=allowed, body_timeout_s=args.body_timeout_s,
    )
    lines = [
        f"# service: http://{host}:{args.port} ({'UI /ui/, ' if args.ui else ''}API docs /docs), "
        f"data dir {config.data_dir}",
        f"# workers: {workers} ({why}); queue up to {args.max_queue}; per request at most "
        f"{args.max_upload_mb:g} MiB, {args.max_files} files, {args.max_pages} pages",
        f"# token: {'required (MINERU_FIT_API_TOKEN)' if token else 'none (set MINERU_FIT_API_TOKEN to require one)'}",
        f"# Host names served: {', '.join(allowed) if allowed else 'any'} (--allowed-host adds one); "
        "cross-origin POSTs from web pages are refused",
        f"# engine: {engine.kind} — {engine.reason}",
    ]
    if engine.kind == "none":
        lines.append("# jobs run the flash tier (model-free, born-digital PDFs)")
    if engine.plan is not None:
        lines.append(f"# predicted peak {human(engine.plan.predicted_peak_bytes)} of a {human(engine.plan.budget_bytes)} "
                     f"budget ({engine.plan.device.budget_reason})")
        lines += warning_lines(engine.plan)  # what the plan gives up (a short context), as `serve` says it
    lines += notes
    if engine.runs:
        lines.append("# engine command: " + engine.runs[0].command.shell_line())
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        lines.append(f"# warning: listening on {host} without a token — anyone who can reach it can parse and read jobs")
    return ServiceSetup(config, engine, host, args.port, tuple(lines))
