"""The one GPU Ray gave an engine actor (or the CPU), read where the actor runs; and its plan.

Ray sets CUDA_VISIBLE_DEVICES for an actor that asks for a GPU, so the devices layer sees only
that GPU: the actor plans for ITS free memory now, co-tenants subtracted. A node started with
MINERU_FIT_RAY_SNAPSHOT=FILE plans for the GPU recorded in FILE (`mineru-fit devices --record`)
through the FakeNvml backend instead, and runs the engine on the CPU: a dry run of a cluster's
plans, and how the tests give two nodes two different cards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from mineru_fit.planner import PlanReport, make_report
from mineru_fit.planner.inputs import Hardware, PlanRequest
from mineru_fit.planner.plan import Plan
from mineru_fit.settings import Settings

SNAPSHOT_VARIABLE = "MINERU_FIT_RAY_SNAPSHOT"


@dataclass(frozen=True)
class ActorDevice:
    hardware: Hardware
    engine_device: Optional[str]    # cuda:0 (the one Ray gave), cpu; None: the plan's own
    simulated_from: Optional[Path]  # the snapshot the plan is for, when not this machine's GPU


def actor_device(settings: Settings) -> ActorDevice:
    """This actor's GPU (CUDA_VISIBLE_DEVICES as Ray set it), or RAM when it has none."""
    from mineru_fit.devices import read_inventory

    snapshot = settings.ray_snapshot
    inventory = read_inventory(None, simulate=snapshot)
    if not inventory.has_gpu:
        from mineru_fit.devices.host import available_ram_bytes

        hw = replace(Hardware.cpu(available_ram_bytes() or 0), name=f"the CPU (no CUDA GPU: {inventory.reason})")
        return ActorDevice(hw, "cpu", snapshot)
    gpu = inventory.gpus[0]  # Ray's CUDA_VISIBLE_DEVICES leaves this actor's GPU first (and alone)
    hw = Hardware.from_gpu(name=gpu.name, total_bytes=gpu.memory.total_bytes,
                           free_bytes=gpu.memory.free_bytes, gpu_count=1, compute_capability=gpu.compute_capability,
                           virtual_vram_bytes=settings.virtual_vram_bytes)
    # A recorded card cannot run torch here: plan for it, run on the CPU.
    return ActorDevice(hw, "cpu" if snapshot is not None else "cuda:0", snapshot)


def actor_plan(model_dir: Path, device: ActorDevice, request: PlanRequest, settings: Settings) -> PlanReport:
    from mineru_fit.models import load_spec

    return make_report(load_spec(model_dir), device.hardware, request, user_alloc_conf=settings.pytorch_cuda_alloc_conf)


def model_levels(report: PlanReport, steps_down: int = 0) -> tuple[Plan, ...]:
    """The chosen model level, `steps_down` lower (each restart of the actor: one lower), and the ones below.

    Empty when no model level fits this device."""
    models = [p for p in report.levels if p.level != "flash"]
    names = [p.level for p in models]
    if report.chosen_level not in names:
        return ()
    start = min(names.index(report.chosen_level) + steps_down, len(models) - 1)
    return tuple(models[start:])


def node_label(device: ActorDevice) -> str:
    """How the driver names this actor: node address and device."""
    try:
        import ray

        node = f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:6]}"
        gpus = ray.get_gpu_ids()
    except Exception:  # outside Ray (unit tests): the host name is enough
        node, gpus = os.uname().nodename, []
    where = f"GPU {','.join(str(g) for g in gpus)} ({device.hardware.name})" if gpus else "CPU"
    return f"{node} {where}"
