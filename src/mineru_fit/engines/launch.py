"""From a Plan to the exact EngineCommand for the engine version installed here. Pure."""

from __future__ import annotations

from types import ModuleType
from typing import Mapping, Optional, Sequence

from mineru_fit.engines import sglang, vllm
from mineru_fit.engines.command import EngineCommand, option_value
from mineru_fit.engines.flags import fit_argv, installed_version, load_flags
from mineru_fit.errors import EngineNotInstalledError, UsageError
from mineru_fit.planner.plan import Plan

ENGINES: dict[str, ModuleType] = {"sglang": sglang, "vllm": vllm}


def engine_module(name: str) -> ModuleType:
    try:
        return ENGINES[name]
    except KeyError:
        raise UsageError(f"{name} is not a process engine — use sglang or vllm") from None


def engine_command(plan: Plan, *, installed: Optional[str], launcher: Optional[Sequence[str]] = None,
                   extra_args: Sequence[str] = (), vl_utils: Optional[vllm.VlUtils] = None,
                   environ: Optional[Mapping[str, str]] = None) -> EngineCommand:
    """The plan's argv checked against `installed` (None: the newest version we hold).

    `launcher` replaces the engine's launcher (e.g. another venv's python); `extra_args` are the
    user's pass-through flags, appended untouched.
    """
    module = engine_module(plan.engine)
    flags = load_flags(module.ENGINE)
    table, why = flags.table_for(installed)
    prefix = tuple(plan.argv[: len(module.PLAN_LAUNCHER)])
    if prefix != module.PLAN_LAUNCHER:
        raise ValueError(f"a {plan.engine} plan must start with {module.PLAN_LAUNCHER}, not {prefix}")
    args, notes = fit_argv(plan.argv[len(module.PLAN_LAUNCHER):], table, flags)
    if module is vllm:
        args, env_more, more = vllm.adapt(args, table, plan, vllm_version=installed, vl_utils=vl_utils,
                                          environ=environ)
    else:
        args, env_more, more = sglang.adapt(args, table, plan)
    argv = (*(launcher or module.default_launcher()), *args, *extra_args)
    return EngineCommand(
        engine=plan.engine, level=plan.level, flag_version=table.version, installed_version=installed,
        argv=tuple(argv), env={**plan.env, **env_more},
        host=option_value(argv, "--host") or "127.0.0.1", port=int(option_value(argv, "--port") or 30000),
        notes=(why, *notes, *more),
    )


def require_installed(engine: str) -> str:
    """The installed version, or a one-line error naming the extra to install."""
    module = engine_module(engine)
    version = installed_version(load_flags(engine).distribution)
    if version is None:
        raise EngineNotInstalledError(
            f"{engine} is not installed — pip install 'mineru-fit[{module.EXTRA}]' on a machine with a CUDA GPU, "
            f"use --engine builtin, or set {module.EXECUTABLE_VARIABLE} to its launcher"
        )
    return version
