"""A mineru-vl-utils VlmClient that submits straight to the built-in engine's batcher (no HTTP).

MinerUClient picks its VlmClient by backend name; we construct it with the `transformers`
backend (which hands PIL images to the client, no PNG round trip) over the engine's own model
and processor, then replace its `client` with this one. Requests are encoded and clamped the
way the engine's HTTP server does, so both paths ask the model the same thing.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Sequence

from mineru_vl_utils.vlm_client.base_client import SamplingParams, VlmClient
from mineru_vl_utils.vlm_client.utils import aio_image_to_obj_list

from mineru_fit.engines.builtin.images import fit_pixels
from mineru_fit.engines.builtin.jobs import SamplingKey
from mineru_fit.engines.builtin.limits import RequestRefused


class EnginePressure(Exception):
    """The engine ran out of memory even after splitting the batch and shrinking the images (its 503)."""


class EngineRequestError(Exception):
    """The engine refused or failed one request for a reason other than memory."""


def sampling_key(sp: SamplingParams) -> SamplingKey:
    """MinerU's sampling parameters as the engine batches them (defaults as an OpenAI server fills them)."""
    return SamplingKey.from_request(
        temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k, repetition_penalty=sp.repetition_penalty,
        presence_penalty=sp.presence_penalty, frequency_penalty=sp.frequency_penalty,
        ngram_size=sp.no_repeat_ngram_size,
        skip_special_tokens=False,  # the layout answer is made of special tokens (<|box_start|>, ...)
    )


async def gather_or_cancel(coroutines: list[Any]) -> list[Any]:
    """Results in order; on the first failure the others are cancelled (the page is retried whole)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class EngineVlmClient(VlmClient):
    """Answers MinerU's requests with the in-process engine `state` (engines.builtin.server.EngineState)."""

    def __init__(self, state: Any, *, system_prompt: str, max_new_tokens: int) -> None:
        super().__init__(system_prompt=system_prompt, allow_truncated_content=True)
        self.state = state
        self.max_new_tokens = max_new_tokens  # the plan's output cap, never exceeded

    def _messages(self, prompt: str, images: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})  # as the HTTP client sends it
        parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(images)]
        parts.append({"type": "text", "text": prompt or self.prompt})
        messages.append({"role": "user", "content": parts})
        return messages

    async def aio_predict(self, image: Any, prompt: str = "", sampling_params: Optional[SamplingParams] = None,
                          priority: Optional[int] = None) -> str:
        generator = self.state.generator
        pictures = [fit_pixels(im, generator.m.max_pixels) for im in await aio_image_to_obj_list(image)]
        sp = self.build_sampling_params(sampling_params)
        wanted = min(sp.max_new_tokens or self.max_new_tokens, self.max_new_tokens)
        try:
            job = await self.state.admit(self._messages(prompt, len(pictures)), pictures, sampling_key(sp), wanted)
        except RequestRefused as exc:
            raise EngineRequestError(exc.message) from exc
        outcome = await self.state.batcher.submit(job)
        if outcome.ok:
            return outcome.text
        if outcome.error_status == 503:
            raise EnginePressure(outcome.error_message)
        raise EngineRequestError(outcome.error_message or f"the engine answered {outcome.error_status}")

    async def aio_batch_predict(self, images: Sequence[Any], prompts: Any = "", sampling_params: Any = None,
                                priority: Any = None, semaphore: Any = None, use_tqdm: bool = False,
                                tqdm_desc: Optional[str] = None) -> list[str]:
        count = len(images)
        prompts = [prompts] * count if isinstance(prompts, str) else list(prompts)
        params = list(sampling_params) if isinstance(sampling_params, Sequence) else [sampling_params] * count

        async def one(i: int) -> str:
            if semaphore is None:
                return await self.aio_predict(images[i], prompts[i], params[i])
            async with semaphore:
                return await self.aio_predict(images[i], prompts[i], params[i])

        return await gather_or_cancel([one(i) for i in range(count)])

    def predict(self, *args: Any, **kwargs: Any) -> str:
        raise NotImplementedError("the in-process engine client is asynchronous: use MinerUClient's aio_* methods")

    def batch_predict(self, *args: Any, **kwargs: Any) -> list[str]:
        raise NotImplementedError("the in-process engine client is asynchronous: use MinerUClient's aio_* methods")
