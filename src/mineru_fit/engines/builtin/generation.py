"""The model side of the engine: encode a request, prefill it alone, then decode every row in flight
one token per step (continuous batching; the scheduler in batcher.py decides who joins and leaves)."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from mineru_fit.engines.builtin.images import fit_pixels
from mineru_fit.engines.builtin.jobs import Job, Outcome
from mineru_fit.engines.builtin.kvcache import RowCache
from mineru_fit.engines.builtin.loader import LoadedModel
from mineru_fit.engines.builtin.sampling import RowSampler

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
        """jobs: the rows in flight once the last one (the one being prefilled) joins."""
        if self.min_batch is not None and len(jobs) >= self.min_batch:
            raise torch.OutOfMemoryError(f"injected: batch of {len(jobs)} >= {self.min_batch}")
        if self.min_pixels is not None:
            for job in jobs[-1:]:
                for image in job.images:
                    if image.size[0] * image.size[1] >= self.min_pixels:
                        raise torch.OutOfMemoryError(f"injected: image of {image.size} >= {self.min_pixels} px")



@dataclass
class Row:
    """One request in flight: its sampler, what it has produced, and its next rope position."""

    job: Job
    sampler: RowSampler
    next_position: int          # mrope position of the next token (text after an image runs ahead of the index)
    output: list[int] = field(default_factory=list)


class Generator:
    """The model side of the engine: encode a request, prefill it, step every row in flight."""

    def __init__(self, loaded: LoadedModel, faults: Optional[FaultInjection] = None,
                 max_model_len: Optional[int] = None) -> None:
        self.m = loaded
        self.faults = faults
        self.max_model_len = max_model_len
        # transformers renamed forward's past_key_values to cache (5.2x); use what this one takes.
        forward = inspect.signature(loaded.model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in forward else "past_key_values"
        self.num_layers = loaded.model.config.get_text_config(decoder=True).num_hidden_layers
        self.rows: list[Row] = []
        self.cache = RowCache(self.num_layers, max_model_len)
        self.steps = 0              # decode steps run (a test watches a cancelled row stop)

    def encode(self, job: Job) -> None:
        """Apply the chat template and the processor to one request (CPU work, any thread)."""
        text = self.m.processor.apply_chat_template(job.messages, add_generation_prompt=True, tokenize=False)
        encoded = self.m.processor(text=[text], images=job.images or None, return_tensors="pt")
        job.encoded = dict(encoded)
        job.prompt_tokens = int(encoded["input_ids"].shape[1])

    def shrink(self, job: Job) -> Job:
        """The same request with every image at half its pixels, re-encoded."""
        smaller = [fit_pixels(im, max(self.m.min_pixels, im.size[0] * im.size[1] // 2)) for im in job.images]
        again = Job(job.messages, smaller, job.key, job.max_new_tokens, job.requested_max_tokens, shrunk=True,
                    seed=job.seed)
        again.cancelled = job.cancelled
        self.encode(again)
        # Fewer image tokens leave more room: keep the output cap the request was given.
        return again

    # The scheduler's side: who is in flight, and what they hold.
    def running(self) -> list[Job]:
        return [row.job for row in self.rows]

    def cache_bytes(self) -> int:
        """Bytes of KV buffers held now (what the plan's KV term bounds)."""
        return self.cache.bytes_held()

    @torch.inference_mode()
    def prefill(self, job: Job) -> Optional[Outcome]:
        """Run the prompt (and its images) alone, sample its first token and add it to the rows in
        flight; its Outcome when that already ends it. Raises torch.OutOfMemoryError as-is."""
        if self.faults is not None:
            self.faults.check(self.running() + [job])
        device = self.m.device
        encoded = {k: v.to(device) for k, v in job.encoded.items() if isinstance(v, torch.Tensor)}
        if "pixel_values" in encoded:
            encoded["pixel_values"] = encoded["pixel_values"].to(self.m.dtype)
        ids = encoded["input_ids"]
        cache = RowCache(self.num_layers, self.max_model_len)
        cache.pads = [0]
        model = self.m.model
        # The model computes the prompt's 3-D (mrope) positions itself on an empty cache and keeps
        # the offset for the text after them in rope_deltas; read it back at once, per row.
        model.model.rope_deltas = None
        out = model(**encoded, **{self.cache_kwarg: cache}, use_cache=True, logits_to_keep=1)
        deltas = getattr(model.model, "rope_deltas", None)
        delta = int(deltas.reshape(-1)[0]) if isinstance(deltas, torch.Tensor) else 0
        model.model.rope_deltas = None
        sampler = RowSampler(job.key, ids[0], self.m.eos_token_ids, job.seed, device)
        row = Row(job, sampler, next_position=ids.shape[1] + delta)
        logits = out.logits[0, -1]
        del out
        done = self._advance(row, logits)
        if done is not None:
            return done
        self.cache.merge(cache)
        self.rows.append(row)
        return None

    @torch.inference_mode()
    def step(self) -> list[tuple[Job, Outcome]]:
        """One token for every row in flight; the rows that finished leave (their KV freed)."""
        if not self.rows:
            return []
        device = self.m.device
        ids = torch.tensor([[row.output[-1]] for row in self.rows], device=device)
        positions = torch.tensor([row.next_position for row in self.rows], device=device)
        mask = self.cache.attention_mask(1, device)
        width = self.cache.width
        try:
            out = self.m.model(input_ids=ids, attention_mask=mask, position_ids=positions.view(1, -1, 1).expand(3, -1, 1),
                               **{self.cache_kwarg: self.cache}, use_cache=True)
        except BaseException:
            self.cache.rollback(width)  # the rows stay as they were: the step can be retried
            raise
        logits = out.logits[:, -1]
        del out
        self.steps += 1
        finished: list[tuple[Job, Outcome]] = []
        keep: list[int] = []
        for i, row in enumerate(self.rows):
            row.next_position += 1
            done = self._advance(row, logits[i])
            if done is None:
                keep.append(i)
            else:
                finished.append((row.job, done))
        if finished:
            self._keep(keep)
        return finished

    def run(self, jobs: list[Job]) -> list[Outcome]:
        """Run these jobs together to their end, without a scheduler (scripts and tests)."""
        outcomes: dict[int, Outcome] = {}
        for job in jobs:
            done = self.prefill(job)
            if done is not None:
                outcomes[id(job)] = done
        while self.rows:
            for job, outcome in self.step():
                outcomes[id(job)] = outcome
        return [outcomes[id(job)] for job in jobs]

    def drop(self, job: Job) -> Outcome:
        """Take a row out of flight (cancelled or preempted), freeing its KV; what it had so far."""
        for i, row in enumerate(self.rows):
            if row.job is job:
                self._keep([k for k in range(len(self.rows)) if k != i])
                return self._finish(row, "abort")
        raise KeyError("job not in flight")

    def drop_all(self) -> list[Job]:
        """Every row out of flight (after an error that leaves the cache in doubt)."""
        jobs = self.running()
        self.rows = []
        self.cache = RowCache(self.num_layers, self.max_model_len)
        return jobs

    def _keep(self, indices: list[int]) -> None:
        self.cache.keep(indices)
        self.rows = [self.rows[i] for i in indices]

    def _advance(self, row: Row, logits: torch.Tensor) -> Optional[Outcome]:
        """Sample the row's next token; its Outcome when that ends the row."""
        job = row.job
        token = row.sampler.next_token(logits, row.output)
        if not job.key.ignore_eos and token in self.m.eos_token_ids:
            return self._finish(row, "stop")
        row.output.append(token)
        if job.key.stops:
            # Only the tail can complete a stop string that was not there a step ago. A token is at
            # least one byte and a character at most 4, so this many tokens hold the longest stop.
            span = 4 * max(len(stop) for stop in job.key.stops) + 1
            tail = self.m.tokenizer.decode(row.output[-span:], skip_special_tokens=job.key.skip_special_tokens)
            if any(stop in tail for stop in job.key.stops):
                return self._finish(row, "stop")
        if len(row.output) >= job.max_new_tokens:
            return self._finish(row, "length")
        return None

    def _finish(self, row: Row, finish: str) -> Outcome:
        job = row.job
        text = self.m.tokenizer.decode(row.output, skip_special_tokens=job.key.skip_special_tokens)
        for stop in job.key.stops:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return Outcome(text=text, finish_reason=finish, prompt_tokens=job.prompt_tokens,
                       completion_tokens=len(row.output))
