"""`parse --ray`: files -> pages -> rendered images (CPU tasks) -> engine actors, one per GPU ->
page results, landed and assembled by the driver. Flash pages are CPU tasks with no actor.

Ray Data streams the pages (render tasks feed the actor pool as it drains, so memory holds only
what is in flight); the driver writes each page's checkpoint as it arrives and each document
when its last page does, so a rerun resumes and the summary accounts for every page.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from mineru_fit.parsing.discover import discover
from mineru_fit.parsing.observer import ParseObserver
from mineru_fit.parsing.options import ParseOptions
from mineru_fit.parsing.results import ParseReport
from mineru_fit.parsing.tiers import TierChoice, choose_tier
from mineru_fit.scale.book import Book
from mineru_fit.scale.cluster import Cluster, connect
from mineru_fit.scale.job import ActorJob, RayJob
from mineru_fit.scale.stages import read_result
from mineru_fit.scale.stats import ActorStat, actor_stats

logger = logging.getLogger(__name__)

RENDER_BATCH = 4           # pages per render task
MIN_FLASH_CHUNK = 16       # pages: below this, splitting a PDF costs more than it saves
RENDER_CPUS = 0.5          # per render task (PDFium is single-threaded; a page renders in ~0.1 s)
WAIT_FOR_ACTORS_S = 1800   # engines load weights (SGLang/vLLM also compile): up to this long
POLL_EVERY_S = 0.5         # how often the driver reads the registry (plans, step-downs, GPU memory)


@dataclass(frozen=True)
class RayParseResult:
    report: ParseReport
    actors: tuple[ActorStat, ...] = ()
    cluster: Optional[Cluster] = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def ray_tier(job: RayJob) -> TierChoice:
    """As `parse --tier`, except that the level is each actor's to plan, on its own GPU."""
    if job.tier in ("auto", "vlm") and not job.server_url and job.model_dir is not None:
        return TierChoice("vlm", f"{job.model_id} found at {job.model_dir}: each engine actor plans a level "
                                 "for its own GPU's free memory")
    return choose_tier(job.tier, server_url=job.server_url, model_dir=job.model_dir, model_name=job.model_id,
                       plan_level=None)


def parse_on_ray(paths: Sequence[Path], options: ParseOptions, job: RayJob, *,
                 observer: Optional[ParseObserver] = None, say: Callable[[str], None] = print) -> RayParseResult:
    """Parse every PDF/image in `paths` on the Ray cluster `job.address` names; outputs as `parse_documents`."""
    observer = observer or ParseObserver()
    started = time.perf_counter()
    tier = ray_tier(job)
    say(f"tier: {tier.tier} — {tier.reason}")
    # What checkpoints record, as a plain parse does: a rerun of either resumes the other.
    settings = {} if tier.tier == "flash" else {"dpi": options.dpi, "model": job.model_id}
    book = Book(discover(paths), options, tier.tier, settings, observer)
    book.open_all()
    work = book.work()
    cluster: Optional[Cluster] = None
    actors: tuple[ActorStat, ...] = ()
    error: Optional[str] = None
    notes: list[str] = []
    if work:
        with connect(job.address) as cluster:
            say(cluster.describe())
            say(f"Ray dashboard: {cluster.dashboard_url}" if cluster.dashboard_url else
                "Ray dashboard: none (the head node runs one when started with `ray[default]` installed)")
            try:
                actors = _run(work, options, job, tier.tier, cluster, book, observer)
            except KeyboardInterrupt:
                error = "the run was interrupted before this page"
                raise
            except Exception as exc:  # Ray's own failures: every page not landed says so, no traceback
                error = f"the Ray pipeline failed ({type(exc).__name__}: {exc}) — rerun to resume"
                notes.append(error)
            finally:
                book.finish_rest(error)
    book.finish_rest(None)
    report = ParseReport(files=book.files(), tier=tier.tier, tier_reason=tier.reason,
                         seconds=time.perf_counter() - started, notes=tuple(notes))
    return RayParseResult(report, actors, cluster, tuple(notes))


def _run(work: list[tuple[int, str, list[int]]], options: ParseOptions, job: RayJob, tier: str, cluster: Cluster,
         book: Book, observer: ParseObserver) -> tuple[ActorStat, ...]:
    import ray

    started = time.perf_counter()
    if tier == "flash":
        counts = _drain(_flash_dataset(work, options, job, cluster.cpus), book)
        return actor_stats({}, counts, time.perf_counter() - started)
    from mineru_fit.scale.registry import Registry

    name = f"mineru-fit-registry-{uuid.uuid4().hex[:8]}"
    registry = ray.remote(Registry).options(name=name, num_cpus=0).remote()
    poller = _Poller(registry, observer)
    poller.start()
    try:
        try:
            counts = _drain(_vlm_dataset(work, options, job, ActorJob(job, name), cluster), book)
        finally:
            poller.stop()
        state = ray.get(registry.read.remote(0))
    finally:
        ray.kill(registry)
    return actor_stats(state["actors"], counts, time.perf_counter() - started)


def _drain(dataset: Any, book: Book) -> dict[str, int]:
    """Land every page result as it streams out; pages per actor label."""
    counts: dict[str, int] = {}
    for row in dataset.iter_rows():
        book.land(int(row["file_no"]), read_result(row["payload"]))
        counts[str(row["actor"])] = counts.get(str(row["actor"]), 0) + 1
    return counts


def _flash_chunk(pages: int, job: RayJob, cpus: int) -> int:
    """Pages per flash task: each docvortex call has a fixed cost, so a file is split only as far as
    the CPUs can run its parts at once (and never below MIN_FLASH_CHUNK pages)."""
    if job.flash_chunk_pages:
        return max(1, job.flash_chunk_pages)
    return max(MIN_FLASH_CHUNK, -(-pages // max(1, cpus)))


def _flash_dataset(work: list[tuple[int, str, list[int]]], options: ParseOptions, job: RayJob, cpus: int) -> Any:
    import ray

    from mineru_fit.scale.stages import flash_pages

    chunks = [{"file_no": n, "path": path, "pages": pages[i:i + size]}
              for n, path, pages in work for size in [_flash_chunk(len(pages), job, cpus)]
              for i in range(0, len(pages), size)]
    return (ray.data.from_items(chunks, override_num_blocks=len(chunks))
            .map_batches(flash_pages, batch_size=1, num_cpus=1, fn_kwargs={"password": options.password}))


def _vlm_dataset(work: list[tuple[int, str, list[int]]], options: ParseOptions, job: RayJob, spec: ActorJob,
                 cluster: Cluster) -> Any:
    import ray
    from ray.data import ActorPoolStrategy

    from mineru_fit.scale.engine_actor import EngineActor
    from mineru_fit.scale.stages import render_pages

    from ray.data import DataContext

    # Pages flow once every actor is up (or fail with Ray's timeout): each GPU gets its share, and a
    # model still loading on one node does not leave the others with all the work.
    DataContext.get_current().wait_for_min_actors_s = WAIT_FOR_ACTORS_S
    pages = [{"file_no": n, "path": path, "page_idx": p} for n, path, todo in work for p in todo]
    # One actor per GPU, each planning for its own; no GPU in the cluster (or --server): one on a CPU.
    actors = cluster.gpus if cluster.gpus and not job.server_url else 1
    gpus = 1 if cluster.gpus and not job.server_url else 0
    blocks = max(1, min(len(pages), (len(pages) + RENDER_BATCH - 1) // RENDER_BATCH))
    # Render tasks ask for less CPU than the actor so Ray Data does not fuse them into it: pages
    # render on any node while the GPU works.
    return (ray.data.from_items(pages, override_num_blocks=blocks)
            .map_batches(render_pages, batch_size=RENDER_BATCH, num_cpus=RENDER_CPUS,
                         fn_kwargs={"dpi": options.dpi, "password": options.password})
            .map_batches(EngineActor, batch_size=job.batch_pages, compute=ActorPoolStrategy(size=actors),
                         num_gpus=gpus, num_cpus=1, fn_constructor_kwargs={"spec": spec}))


class _Poller(threading.Thread):
    """Reads the registry while pages stream: each actor's plan, step-downs and restarts, GPU memory."""

    def __init__(self, registry: Any, observer: ParseObserver) -> None:
        super().__init__(name="mineru-fit-ray-poller", daemon=True)
        self.registry = registry
        self.observer = observer
        self.seen = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(POLL_EVERY_S):
            self.read()

    def read(self) -> None:
        import ray

        try:
            state = ray.get(self.registry.read.remote(self.seen), timeout=30)
        except Exception as exc:  # a slow or restarting registry: the next read catches up
            logger.info("registry not read: %s", exc)
            return
        for line in state["events"]:
            self.observer.status(line)
        self.seen = state["next"]
        self.observer.memory(state["memory"])

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)
        self.read()  # what the actors said last

