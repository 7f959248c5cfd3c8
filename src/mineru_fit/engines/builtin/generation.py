"""Run one batch of prepared jobs through model.generate, and decode each row."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers import LogitsProcessorList, StaticCache, StoppingCriteriaList

from mineru_fit.engines.builtin.images import fit_pixels
from mineru_fit.engines.builtin.jobs import Job, Outcome
from mineru_fit.engines.builtin.loader import LoadedModel
from mineru_fit.engines.builtin.sampling import NoRepeatNgramOnOutput, PerRowMaxNewTokens, PresenceFrequencyPenalty

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultInjection:
    """A test hook: raise torch.OutOfMemoryError as a real GPU would, at a chosen size."""

    min_batch: Optional[int] = None     # a batch of at least this many requests
    min_pixels: Optional[int] = None    # any image of at least this many pixels

    @classmethod
    def parse(cls, spec: Optional[str]) -> Optional["FaultInjection"]:
        """'batch>=4', 'pixels>=50000' or both joined by ','; None when unset."""
        if not spec:
            return None
        values: dict[str, int] = {}
        for part in spec.split(","):
            name, _, number = part.strip().partition(">=")
            if name not in ("batch", "pixels") or not number.strip().isdigit():
                raise ValueError(f"bad OOM injection {part!r}: use batch>=N and/or pixels>=N")
            values["min_batch" if name == "batch" else "min_pixels"] = int(number)
        return cls(**values)

    def check(self, jobs: list[Job]) -> None:
        if self.min_batch is not None and len(jobs) >= self.min_batch:
            raise torch.OutOfMemoryError(f"injected: batch of {len(jobs)} >= {self.min_batch}")
        if self.min_pixels is not None:
            for job in jobs:
                for image in job.images:
                    if image.size[0] * image.size[1] >= self.min_pixels:
                        raise torch.OutOfMemoryError(f"injected: image of {image.size} >= {self.min_pixels} px")


class Generator:
    """The model side of the engine: encode a request, run a batch."""

    def __init__(self, loaded: LoadedModel, faults: Optional[FaultInjection] = None,
                 max_model_len: Optional[int] = None) -> None:
        self.m = loaded
        self.faults = faults
        self.max_model_len = max_model_len
        # transformers renamed generate's past_key_values to cache (5.2x); use what this one takes.
        forward = inspect.signature(loaded.model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in forward else "past_key_values"

    def encode(self, job: Job) -> None:
        """Apply the chat template and the processor to one request (CPU work, any thread)."""
        text = self.m.processor.apply_chat_template(job.messages, add_generation_prompt=True, tokenize=False)
        encoded = self.m.processor(text=[text], images=job.images or None, return_tensors="pt")
        job.encoded = dict(encoded)
        job.prompt_tokens = int(encoded["input_ids"].shape[1])

    def shrink(self, job: Job) -> Job:
        """The same request with every image at half its pixels, re-encoded."""
        smaller = [fit_pixels(im, max(self.m.min_pixels, im.size[0] * im.size[1] // 2)) for im in job.images]
        again = Job(job.messages, smaller, job.key, job.max_new_tokens, job.requested_max_tokens, shrunk=True, seed=job.seed)
        self.encode(again)
        # Fewer image tokens leave more room: keep the output cap the request was given.
        return again

    def _collate(self, jobs: list[Job]) -> dict[str, Any]:
        width = max(j.prompt_tokens for j in jobs)
        pad = self.m.pad_token_id
        ids, mask, mm = [], [], []
        for job in jobs:
            row = job.encoded["input_ids"][0]
            gap = width - row.shape[0]
            ids.append(torch.cat([torch.full((gap,), pad, dtype=row.dtype), row]))
            mask.append(torch.cat([torch.zeros(gap, dtype=torch.long), torch.ones(row.shape[0], dtype=torch.long)]))
            if "mm_token_type_ids" in job.encoded:
                types = job.encoded["mm_token_type_ids"][0]
                mm.append(torch.cat([torch.zeros(gap, dtype=types.dtype), types]))
        batch: dict[str, Any] = {"input_ids": torch.stack(ids), "attention_mask": torch.stack(mask)}
        if mm:
            batch["mm_token_type_ids"] = torch.stack(mm)
        with_images = [j.encoded for j in jobs if "pixel_values" in j.encoded]
        if with_images:
            batch["pixel_values"] = torch.cat([e["pixel_values"] for e in with_images]).to(self.m.dtype)
            batch["image_grid_thw"] = torch.cat([e["image_grid_thw"] for e in with_images])
        return {k: v.to(self.m.device) for k, v in batch.items()}

    @torch.inference_mode()
    def run(self, jobs: list[Job]) -> list[Outcome]:
        """Generate for jobs that share a SamplingKey; raises torch.OutOfMemoryError as-is."""
        if self.faults is not None:
            self.faults.check(jobs)
        key = jobs[0].key
        inputs = self._collate(jobs)
        width = inputs["input_ids"].shape[1]
        processors = LogitsProcessorList()
        if key.presence_penalty or key.frequency_penalty:
            processors.append(PresenceFrequencyPenalty(width, key.presence_penalty, key.frequency_penalty))
        if key.ngram_size > 0:
            processors.append(NoRepeatNgramOnOutput(width, key.ngram_size, len(jobs)))
        limits = [j.max_new_tokens for j in jobs]
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max(limits),
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([PerRowMaxNewTokens(width, limits)]),
            pad_token_id=self.m.pad_token_id,
            eos_token_id=list(self.m.eos_token_ids),
            repetition_penalty=key.repetition_penalty,
        )
        if self.max_model_len is not None:
            # A static KV cache of batch × context, as the plan counts it: memory does not grow
            # with the answer, and the caching allocator reuses the same blocks batch after batch.
            kwargs[self.cache_kwarg] = StaticCache(config=self.m.model.config, max_cache_len=self.max_model_len)
            kwargs["disable_compile"] = True  # recompiling per batch shape would cost more than it saves
        if key.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=key.temperature, top_p=key.top_p, top_k=key.top_k or 0)
            if jobs[0].seed is not None:
                torch.manual_seed(jobs[0].seed)
        if key.ignore_eos:
            # EOS is suppressed until the longest row's length; each row still stops at its own.
            kwargs["min_new_tokens"] = max(limits)
        if key.stops:
            kwargs.update(stop_strings=list(key.stops), tokenizer=self.m.tokenizer)
        output = self.m.model.generate(**inputs, **kwargs)
        return [self._decode(job, output[row, width:], limit) for row, (job, limit) in enumerate(zip(jobs, limits))]

    def _decode(self, job: Job, tokens: torch.Tensor, limit: int) -> Outcome:
        ids = tokens.tolist()[:limit]
        finish = "length"
        for i, token in enumerate(ids if not job.key.ignore_eos else ()):
            if token in self.m.eos_token_ids:
                ids, finish = ids[:i], "stop"
                break
        if finish == "length":
            # A row that finished before the batch is padded; early without EOS = a stop string.
            while ids and ids[-1] == self.m.pad_token_id:
                ids.pop()
            if len(ids) < limit:
                finish = "stop"
        text = self.m.tokenizer.decode(ids, skip_special_tokens=job.key.skip_special_tokens)
        for stop in job.key.stops:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return Outcome(text=text, finish_reason=finish, prompt_tokens=job.prompt_tokens, completion_tokens=len(ids))
