"""The monitor: GPUs (NVML) and engines (/metrics) joined in one Snapshot, advice on what to change.

sampling.Sampler reads the machine; advisor.advise judges snapshots (pure); render draws them
(pure); schema turns them into JSON; exporter serves them to Prometheus; live runs the loop;
watch/watch_run measure one command's peak memory per phase.
"""

from mineru_fit.monitor.advice import Advice, AdvisorContext
from mineru_fit.monitor.advisor import RULES, advise
from mineru_fit.monitor.live import MonitorOptions, run_monitor
from mineru_fit.monitor.render import render_monitor, sparkline
from mineru_fit.monitor.sampling import MemoryHistory, Sampler
from mineru_fit.monitor.schema import snapshot_to_dict
from mineru_fit.monitor.snapshot import EngineState, EngineTag, MemoryPoint, ProcessRow, Snapshot

__all__ = [
    "RULES",
    "Advice",
    "AdvisorContext",
    "EngineState",
    "EngineTag",
    "MemoryHistory",
    "MemoryPoint",
    "MonitorOptions",
    "ProcessRow",
    "Sampler",
    "Snapshot",
    "advise",
    "render_monitor",
    "run_monitor",
    "snapshot_to_dict",
    "sparkline",
]
