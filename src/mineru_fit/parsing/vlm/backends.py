"""Where MinerU2.5 runs for the vlm tier: the built-in engine in this process, or a server over HTTP.

Both hand pages to mineru-vl-utils' MinerUClient (two-step extraction) with every request's
output clamped to the plan's cap; they differ in what "out of memory" looks like and in whether
they can step down a level (only the in-process engine can: it is rebuilt at the next level).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import httpx

from mineru_fit.errors import MissingExtraError, VlmServerError
from mineru_fit.parsing.memory import MemoryProbe, none_probe, nvml_probe, torch_probe
from mineru_fit.planner.constants import DEFAULT_CONCURRENCY
from mineru_fit.planner.plan import Plan

logger = logging.getLogger(__name__)

PRESSURE = "pressure"  # out of memory / overloaded: fewer pages at once, then a lower level
ERROR = "error"        # anything else: retried a few times as it is
# Pages reach the in-process engine as they are rendered, a few ms apart: a wider window than
# the server's default fills batches, and costs nothing next to a generate call.
BATCH_WAIT_MS = 50.0


def _mineru() -> Any:
    try:
        import mineru_vl_utils
    except ImportError as exc:
        raise MissingExtraError("mineru-vl-utils", "engine") from exc
    return mineru_vl_utils


def clamped_sampling(cap: Optional[int]) -> dict[str, Any]:
    """MinerU's per-task sampling parameters with max_new_tokens never above `cap`.

    Left alone, MinerU asks for no limit and an engine may allow the rest of the context
    (MinerU #4868): the plan's output cap is what every request may afford."""
    from mineru_vl_utils.mineru_client import DEFAULT_SAMPLING_PARAMS

    if cap is None:
        return dict(DEFAULT_SAMPLING_PARAMS)
    return {task: dataclasses.replace(params, max_new_tokens=min(params.max_new_tokens or cap, cap))
            for task, params in DEFAULT_SAMPLING_PARAMS.items()}


def cap_crop_pixels(mineru: Any, max_pixels: int) -> None:
    """Downscale every content crop to the plan's pixel cap before it is sent (the layout page is
    MinerU's fixed 1036×1036, which the plan counts apart)."""
    from mineru_fit.engines.builtin.images import fit_pixels

    resize = mineru.helper.resize_by_need
    mineru.helper.resize_by_need = lambda image: fit_pixels(resize(image), max_pixels)


class InProcessBackend:
    """The built-in engine in this process; its batcher takes MinerU's requests directly."""

    can_step_down = True
    kind = "built-in engine (in this process)"

    def __init__(self, levels: Sequence[Plan], model_dir: Path, *, device: Optional[str] = None,
                 max_new_tokens: Optional[int] = None, faults: Optional[Callable[[str], Any]] = None) -> None:
        if not levels:
            raise ValueError("at least one model level is needed")
        self.levels = list(levels)
        self.model_dir = model_dir
        self.device = device
        self.user_cap = max_new_tokens
        self.faults = faults  # test hook: level -> engines.builtin.generation.FaultInjection (or alike)
        self.index = 0
        self.state: Any = None
        self.mineru: Any = None
        self.probe: MemoryProbe = none_probe()
        self.notes: list[str] = []

    @property
    def plan(self) -> Plan:
        return self.levels[self.index]

    @property
    def level(self) -> str:
        return self.plan.level

    @property
    def label(self) -> str:
        return f"built-in engine in this process, level {self.level}"

    @property
    def start_pages(self) -> int:
        return max(1, self.plan.batch_size)

    @property
    def batch_size(self) -> int:
        return self.state.batcher.cap if self.state is not None else self.plan.batch_size

    async def start(self) -> None:
        await self._build()

    async def _build(self) -> None:
        mineru_vl_utils = _mineru()
        from mineru_fit.engines.builtin.options import BuiltinOptions
        from mineru_fit.engines.builtin.server import build_state
        from mineru_fit.parsing.vlm.client import EngineVlmClient

        plan = self.plan
        for key, value in plan.env.items():  # e.g. PYTORCH_CUDA_ALLOC_CONF, before torch starts CUDA
            os.environ.setdefault(key, value)
        options = BuiltinOptions.from_plan(plan, str(self.model_dir), device=self.device, batch_wait_ms=BATCH_WAIT_MS)
        faults = self.faults(plan.level) if self.faults is not None else None
        self.state = await asyncio.to_thread(build_state, options, faults)
        await self.state.batcher.start()
        cap = min(plan.max_new_tokens, self.user_cap or plan.max_new_tokens)
        loaded = self.state.generator.m
        self.mineru = mineru_vl_utils.MinerUClient(
            backend="transformers", model=loaded.model, processor=loaded.processor,
            sampling_params=clamped_sampling(cap), use_tqdm=False,
        )
        self.mineru.client = EngineVlmClient(self.state, system_prompt=self.mineru.client.system_prompt,
                                             max_new_tokens=cap)
        self.probe = torch_probe(loaded.device) if loaded.device.type == "cuda" else none_probe()

    async def extract(self, image: Any, throttle: Any) -> list[Any]:
        return list(await self.mineru.aio_two_step_extract(image, semaphore=throttle))

    def classify(self, exc: BaseException) -> str:
        from mineru_fit.parsing.vlm.client import EnginePressure

        return PRESSURE if isinstance(exc, EnginePressure) else ERROR

    async def step_down(self) -> Optional[str]:
        """Rebuild the engine at the next, more aggressive level; None when there is none."""
        if self.index + 1 >= len(self.levels):
            return None
        await self._teardown()
        self.index += 1
        await self._build()
        return self.level

    async def _teardown(self) -> None:
        if self.state is None:
            return
        cuda = self.state.generator.m.device.type == "cuda"
        await self.state.batcher.stop()
        self.state = self.mineru = None
        gc.collect()
        if cuda:
            import torch

            torch.cuda.empty_cache()

    async def close(self) -> None:
        await self._teardown()


class ServerBackend:
    """Any OpenAI-compatible MinerU2.5 endpoint: our built-in engine, SGLang, vLLM."""

    can_step_down = False
    level: Optional[str] = None
    kind = "HTTP client"

    def __init__(self, url: str, *, concurrency: Optional[int] = None, max_new_tokens: Optional[int] = None,
                 max_model_len: Optional[int] = None, spec: Any = None, device_mode: Optional[str] = None) -> None:
        self.url = url
        self.concurrency = concurrency or DEFAULT_CONCURRENCY
        self.user_cap = max_new_tokens
        self.max_model_len = max_model_len
        self.spec = spec
        self.mineru: Any = None
        self.model_name = ""
        self.cap: Optional[int] = max_new_tokens
        self.probe: MemoryProbe = nvml_probe(device_mode)
        self.notes: list[str] = []

    @property
    def label(self) -> str:
        return f"server {self.url} ({self.model_name})"

    @property
    def start_pages(self) -> int:
        return self.concurrency

    @property
    def batch_size(self) -> int:
        return self.concurrency

    def _models(self) -> tuple[str, Optional[int]]:
        base = self.url.rstrip("/")
        base = base[: -len("/v1")] if base.endswith("/v1") else base
        key = os.environ.get("MINERU_VL_API_KEY", "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            response = httpx.get(f"{base}/v1/models", headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            raise VlmServerError(f"--server {self.url} does not answer ({exc}) — start one with `mineru-fit serve`") from exc
        if response.status_code != 200:
            raise VlmServerError(f"--server {self.url}: GET /v1/models answered {response.status_code} — "
                                 "is it an OpenAI-compatible server?")
        try:
            models = response.json().get("data") or []
        except ValueError as exc:
            raise VlmServerError(f"--server {self.url}: /v1/models is not JSON — is it an OpenAI-compatible server?") from exc
        if not models:
            raise VlmServerError(f"--server {self.url} serves no model")
        if len(models) > 1 and not os.environ.get("MINERU_VL_MODEL_NAME"):
            names = ", ".join(str(m.get("id")) for m in models)
            raise VlmServerError(f"--server {self.url} serves several models ({names}) — set MINERU_VL_MODEL_NAME")
        chosen = os.environ.get("MINERU_VL_MODEL_NAME") or str(models[0].get("id"))
        length = next((m.get("max_model_len") for m in models if m.get("id") == chosen), None)
        return chosen, int(length) if isinstance(length, int) else None

    def _limits(self, server_len: Optional[int]) -> tuple[Optional[int], Optional[int], Optional[int]]:
        """The output cap, crop pixel cap and layout side the server's context affords (split as the
        planner does); the side is None when MinerU's 1036×1036 layout page fits whole."""
        length = server_len or self.max_model_len
        if length is None:
            self.notes.append("the server does not report its context: outputs are not clamped "
                              "(pass --max-model-len to clamp them)")
            return self.user_cap, None, None
        from mineru_fit.models import default_spec
        from mineru_fit.planner.workload import split_context

        try:
            split = split_context(self.spec or default_spec(), length)
        except Exception:  # a context too short for MinerU's plan: the server will say what it accepts
            return self.user_cap, None, None
        side = None
        if split.layout_shrunk:
            # A server we did not start (vLLM/SGLang with a short --max-model-len) may not cap image
            # pixels itself: a whole layout page would overflow its context on every page.
            side = split.layout_side_px
            self.notes.append(split.degradation() or "")
        return min(split.max_new_tokens, self.user_cap or split.max_new_tokens), split.max_image_pixels, side

    async def start(self) -> None:
        mineru_vl_utils = _mineru()
        self.model_name, server_len = await asyncio.to_thread(self._models)
        self.cap, pixels, side = self._limits(server_len)
        layout = {"layout_image_size": (side, side)} if side else {}
        self.mineru = await asyncio.to_thread(
            mineru_vl_utils.MinerUClient, backend="http-client", server_url=self.url, model_name=self.model_name,
            skip_model_name_checking=True, sampling_params=clamped_sampling(self.cap), use_tqdm=False,
            max_concurrency=self.concurrency * 2, max_retries=2, retry_backoff_factor=0.5, **layout,
        )
        if pixels is not None:
            cap_crop_pixels(self.mineru, pixels)

    async def extract(self, image: Any, throttle: Any) -> list[Any]:
        return list(await self.mineru.aio_two_step_extract(image, semaphore=throttle))

    def classify(self, exc: BaseException) -> str:
        status = getattr(exc, "status_code", None)
        if status in (429, 503) or (status == 500 and "out of memory" in str(exc).lower()):
            return PRESSURE
        return ERROR

    async def step_down(self) -> Optional[str]:
        return None  # the server's level is its own: `mineru-fit serve` steps itself down

    async def close(self) -> None:
        if self.mineru is not None:
            try:
                await self.mineru.aclose()
            except Exception as exc:  # closing connections must not turn a finished run into a failure
                logger.info("closing the HTTP client: %s", exc)
