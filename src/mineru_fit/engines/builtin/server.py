"""The HTTP side of the built-in engine: OpenAI chat completions, models, health, metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from mineru_fit.engines.builtin.batcher import Batcher
from mineru_fit.engines.builtin.images import decode_image
from mineru_fit.engines.builtin.jobs import CANCELLED_STATUS, Job, Outcome, SamplingKey
from mineru_fit.engines.builtin.intake import (
    answered_before_client_left,
    check_shape,
    parse_request,
    read_body,
    retrieve,
)
from mineru_fit.engines.builtin.limits import (
    DECODE_SLOTS,
    GREEDY_BELOW_TEMPERATURE,
    RequestLimits,
    RequestRefused,
    TokenBudget,
)
from mineru_fit.engines.builtin.metrics import EngineMetrics
from mineru_fit.engines.builtin.options import BuiltinOptions
from mineru_fit.engines.builtin.protocol import ChatRequest, completion_body, error_body

logger = logging.getLogger(__name__)

# Bodies up to this size (a page image is ~1 MB of base64) are parsed on the event loop, in milliseconds.
PARSE_INLINE_BYTES = 4 * 1024 * 1024
# MinerU's task prompts: each of these is about an image, so one without an image is a mistake.
IMAGE_PROMPTS = ("Layout Detection:", "Text Recognition:", "Table Recognition:", "Formula Recognition:",
                 "Image Analysis:")


@dataclass
class EngineState:
    """Everything a running server holds; built by `build_state`, used by the app."""

    options: BuiltinOptions
    generator: Any               # generation.Generator
    batcher: Batcher
    metrics: EngineMetrics
    budget: TokenBudget
    served_name: str
    created: int

    async def admit(self, messages: list[dict[str, Any]], images: list[Any], key: SamplingKey,
                    requested_max_tokens: Optional[int], seed: Optional[int] = None) -> Job:
        """Encode a request once (off the event loop) and clamp its output to the context:
        a Job ready for the batcher. RequestRefused (a 4xx) when it cannot be served as sent."""
        job = Job(messages, images, key, max_new_tokens=0, requested_max_tokens=requested_max_tokens, seed=seed)
        try:
            await run_in_threadpool(self.generator.encode, job)
        except RequestRefused:
            raise
        except Exception as exc:  # the processor rejects what it cannot handle (e.g. a degenerate image)
            raise RequestRefused(400, f"the request could not be prepared: {exc}") from exc
        job.max_new_tokens = self.budget.new_tokens_for(job.prompt_tokens, requested_max_tokens)
        return job


def build_state(options: BuiltinOptions, faults: Any = None) -> EngineState:
    """Load the model and wire the generator, batcher and metrics (blocking; loads weights)."""
    import torch

    from mineru_fit.engines.builtin.generation import Generator
    from mineru_fit.engines.builtin.loader import load_model

    loaded = load_model(options)
    generator = Generator(loaded, faults, max_model_len=options.max_model_len)
    cuda = loaded.device.type == "cuda"

    def memory() -> Optional[dict[str, int]]:
        if not cuda:
            return None
        values = {
            "allocated": torch.cuda.memory_allocated(loaded.device),
            "reserved": torch.cuda.memory_reserved(loaded.device),
            "peak": torch.cuda.max_memory_reserved(loaded.device),
        }
        if options.mem_fraction_static is not None:
            total = torch.cuda.get_device_properties(loaded.device).total_memory
            values["cap"] = int(options.mem_fraction_static * total)
        return values

    def release() -> None:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    def is_oom(exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
        )

    metrics = EngineMetrics(
        info={"engine": "builtin", "level": options.level, "model": loaded.served_name,
              "max_model_len": str(options.max_model_len), "device": str(loaded.device)},
        kv_capacity_tokens=options.max_batch_size * options.max_model_len,
        memory=memory,
    )
    # Continuous batching within the plan: rows ≤ its batch, their tokens ≤ its KV (batch × context).
    batcher = Batcher(generator, max_batch=options.max_batch_size,
                      kv_budget_tokens=options.max_batch_size * options.max_model_len,
                      wait_s=options.batch_wait_ms / 1000, is_oom=is_oom, release=release, shrink=generator.shrink,
                      observer=metrics)
    metrics.cap_changed(options.max_batch_size)
    return EngineState(options, generator, batcher, metrics,
                       TokenBudget(options.max_model_len, options.max_new_tokens), loaded.served_name, int(time.time()))


def create_app(state: EngineState, *, on_ready: Any = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        await state.batcher.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await state.batcher.stop()
            decoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="mineru-fit built-in engine", version="1", lifespan=lifespan)
    options = state.options
    limits = RequestLimits.from_plan(max_model_len=options.max_model_len, max_image_pixels=options.max_image_pixels,
                                     max_batch_size=options.max_batch_size, max_input_pixels=options.max_input_pixels)
    # Requests past the door at once: each may hold a body, decoded images and encoded tensors.
    admission = asyncio.Semaphore(limits.max_admitted)
    # Images decode in threads of their own: at most DECODE_SLOTS full-size images at once, and the
    # memory a decode frees is reused by the next one (each new thread would keep its own).
    decoder = ThreadPoolExecutor(max_workers=DECODE_SLOTS, thread_name_prefix="mineru-fit-decode")

    def cancelled() -> Response:
        # Nobody reads this answer; metrics and logs still say what became of the request.
        state.metrics.answered(CANCELLED_STATUS)
        logger.info("client gone: request cancelled")
        return Response(status_code=CANCELLED_STATUS)

    def refuse(exc: RequestRefused) -> JSONResponse:
        state.metrics.answered(exc.status)
        return JSONResponse(error_body(exc.message, exc.kind, exc.status, exc.param), status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": state.served_name, "object": "model", "created": state.created, "owned_by": "mineru-fit",
            "max_model_len": state.options.max_model_len,
        }]}

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions", openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": ChatRequest.model_json_schema()}}, "required": True}})
    async def chat(request: Request) -> Response:
        try:
            body = await read_body(request, limits)
        except RequestRefused as exc:
            return refuse(exc)
        except ClientDisconnect:
            return cancelled()
        # Past here a request holds decoded images and encoded tensors: only so many at once. A body
        # still arriving holds no slot, so a slow client cannot keep others out.
        await admission.acquire()
        submitted: Optional[asyncio.Future[Outcome]] = None
        try:
            if await request.is_disconnected():
                return cancelled()
            try:
                # A large body parses for a while: off the event loop, so other requests are not held.
                parsed = (parse_request(body, limits) if len(body) < PARSE_INLINE_BYTES
                          else await run_in_threadpool(parse_request, body, limits))
                job = await _prepare(state, parsed, limits, decoder)
            except RequestRefused as exc:
                return refuse(exc)
            except Exception as exc:  # a JSON 500 that names the cause; the connection stays usable
                logger.exception("could not prepare a request")
                return refuse(RequestRefused(500, f"the request could not be prepared ({type(exc).__name__}) — "
                                                  "this is a bug in the engine; the server log has the details",
                                             kind="InternalServerError"))
            del body
            submitted = asyncio.ensure_future(state.batcher.submit(job))
            if not await answered_before_client_left(request, submitted):
                job.cancelled = True  # the batcher drops it at its next step
                return cancelled()
            outcome = submitted.result()
        finally:
            if submitted is None or submitted.done():
                admission.release()
            else:  # the job still holds its memory until the batcher lets it go
                submitted.add_done_callback(lambda done: (admission.release(), retrieve(done)))
        if outcome.error_status == CANCELLED_STATUS:
            return cancelled()
        if not outcome.ok:
            status = outcome.error_status or 500
            state.metrics.answered(status)
            kind = "ServiceUnavailableError" if status == 503 else "InternalServerError"
            return JSONResponse(error_body(outcome.error_message, kind, status), status_code=status)
        state.metrics.answered(200)
        return JSONResponse(completion_body(state.served_name, outcome.text, outcome.finish_reason,
                                            outcome.prompt_tokens, outcome.completion_tokens))

    return app


async def _prepare(state: EngineState, req: ChatRequest, limits: RequestLimits, decoder: Executor) -> Job:
    """Check the request against this server and its plan, decode its images and encode it once."""
    options = state.options
    if req.model and req.model != state.served_name:
        name = req.model if len(req.model) <= 80 else req.model[:80] + "…"  # an answer is no place for 100 KB
        raise RequestRefused(404, f"The model `{name}` does not exist — this server serves `{state.served_name}`",
                             kind="NotFoundError", param="model")
    if req.stream:
        raise RequestRefused(400, "streaming is not supported by the built-in engine — send stream=false",
                             param="stream")
    if req.n != 1:
        raise RequestRefused(400, "n must be 1 on the built-in engine", param="n")
    messages: list[dict[str, Any]] = []
    urls: list[str] = []
    texts: list[str] = []
    for message in req.messages:
        if isinstance(message.content, list):
            parts: list[dict[str, Any]] = []
            for part in message.content:
                if part.type in ("image_url", "input_image"):
                    if not part.url:
                        raise RequestRefused(400, "an image_url part has no url", param="messages")
                    urls.append(part.url)
                    parts.append({"type": "image"})
                else:
                    texts.append(part.text or "")
                    parts.append({"type": "text", "text": part.text or ""})
            messages.append({"role": message.role, "content": parts})
        else:
            texts.append(message.content or "")
            messages.append({"role": message.role, "content": message.content or ""})
    check_shape(req, sum(len(t) for t in texts), len(urls), limits, options.max_model_len)
    if not urls and any(prompt in text for text in texts for prompt in IMAGE_PROMPTS):
        raise RequestRefused(400, "this MinerU prompt needs an image — add an image_url part (a data: URL)",
                             param="messages")
    generator = state.generator

    def decode_all() -> list[Any]:
        return [decode_image(u, max_input_pixels=limits.max_input_pixels, allow_remote=options.allow_remote_images,
                             max_encoded_bytes=limits.max_encoded_image_bytes, max_pixels=generator.m.max_pixels)
                for u in urls]

    images = await asyncio.get_running_loop().run_in_executor(decoder, decode_all) if urls else []
    temperature = req.temperature
    if temperature is not None and temperature < GREEDY_BELOW_TEMPERATURE:
        temperature = 0.0
    key = SamplingKey.from_request(
        temperature=temperature, top_p=req.top_p, top_k=req.top_k, repetition_penalty=req.repetition_penalty,
        presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty, ngram_size=req.ngram_size,
        stops=req.stops, skip_special_tokens=req.skip_special_tokens, ignore_eos=req.ignore_eos,
    )
    return await state.admit(messages, images, key, req.requested_max_tokens, seed=req.seed)


def serve(options: BuiltinOptions, faults: Any = None) -> None:
    """Load, then serve on options.host:options.port until interrupted; writes a run record."""
    if options.device.startswith("cuda"):
        # Variable image sizes fragment the cache; must be set before torch initialises CUDA.
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    import uvicorn

    from mineru_fit.runrecords import RunRecord, remove_record, write_record

    state = build_state(options, faults)
    base = f"http://{options.host}:{options.port}"
    record = RunRecord(engine="builtin", level=options.level, pid=os.getpid(), base_url=base,
                       metrics_url=f"{base}/metrics", started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       argv=list(sys.argv))

    def ready() -> None:
        write_record(record)
        print(f"mineru-fit built-in engine: serving {state.served_name} on {base} "
              f"(level {options.level}, batch {options.max_batch_size}, context {options.max_model_len})", flush=True)

    try:
        uvicorn.run(create_app(state, on_ready=ready), host=options.host, port=options.port, log_level="warning")
    finally:
        remove_record(record)
