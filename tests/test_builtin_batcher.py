"""The continuous batcher with a fake model: rows join and leave between steps, the plan's batch and
KV budget hold, OOM recovery (wait, halve, shrink, 503), isolation, cancellation."""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

from mineru_fit.engines.builtin.batcher import RECOVER_AFTER_BATCHES, Batcher, BatchObserver
from mineru_fit.engines.builtin.jobs import CANCELLED_STATUS, Job, Outcome, SamplingKey

KEY = SamplingKey(0.0, 1.0, None, 1.0, 0.0, 0.0, 0, (), True)
OTHER_KEY = SamplingKey(0.7, 0.9, None, 1.0, 0.0, 0.0, 0, (), True)


class FakeOOM(Exception):
    pass


class FakeRows:
    """Each row 'generates' one token per step; its answer is its prompt text."""

    def __init__(self, on_prefill: Optional[Callable[[list[Job]], None]] = None,
                 on_step: Optional[Callable[[list[Job]], None]] = None) -> None:
        self.rows: list[list] = []          # [job, tokens produced]
        self.on_prefill = on_prefill
        self.on_step = on_step
        self.steps: list[list[str]] = []    # the rows of every step, by name
        self.prefilled: list[str] = []

    def running(self) -> list[Job]:
        return [job for job, _ in self.rows]

    def prefill(self, job: Job) -> Optional[Outcome]:
        if self.on_prefill is not None:
            self.on_prefill(self.running() + [job])
        self.prefilled.append(name(job))
        self.rows.append([job, 1])
        return self._done(job, 1)

    def step(self) -> list[tuple[Job, Outcome]]:
        if self.on_step is not None:
            self.on_step(self.running())
        self.steps.append([name(job) for job, _ in self.rows])
        finished, keep = [], []
        for row in self.rows:
            row[1] += 1
            done = self._done(row[0], row[1])
            (keep if done is None else finished).append(row if done is None else (row[0], done))
        self.rows = keep
        return finished

    def _done(self, job: Job, produced: int) -> Optional[Outcome]:
        if produced < job.max_new_tokens:
            return None
        if job is self.rows[-1][0] and produced == 1:
            self.rows.pop()
        return Outcome(text=name(job), completion_tokens=produced, prompt_tokens=job.prompt_tokens)

    def drop(self, job: Job) -> Outcome:
        for i, (held, produced) in enumerate(self.rows):
            if held is job:
                del self.rows[i]
                return Outcome(text="", finish_reason="abort", completion_tokens=produced)
        raise KeyError(name(job))

    def drop_all(self) -> list[Job]:
        jobs = self.running()
        self.rows = []
        return jobs


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.ooms: list[str] = []
        self.caps: list[int] = []
        self.tokens = 0

    def oom(self, action: str) -> None:
        self.ooms.append(action)

    def cap_changed(self, cap: int) -> None:
        self.caps.append(cap)

    def generated(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens


def name(job: Job) -> str:
    return job.messages[0]["content"]


def job(text: str, tokens: int = 4, key: SamplingKey = KEY, images: int = 0, prompt: int = 10) -> Job:
    made = Job([{"role": "user", "content": text}], [object()] * images, key, tokens, None)
    made.prompt_tokens = prompt
    return made


def run_all(jobs: list[Job], rows: FakeRows, *, max_batch: int = 4, shrink=None, kv_budget: Optional[int] = None,
            wait_s: float = 0.05, during: Optional[Callable[[], None]] = None) -> tuple[list[Outcome], Recorder]:
    recorder = Recorder()

    async def main() -> list[Outcome]:
        batcher = Batcher(rows, max_batch=max_batch, kv_budget_tokens=kv_budget, wait_s=wait_s,
                          is_oom=lambda e: isinstance(e, FakeOOM), shrink=shrink, observer=recorder)
        await batcher.start()
        try:
            return list(await asyncio.gather(*(batcher.submit(j) for j in jobs)))
        finally:
            await batcher.stop()

    return asyncio.run(main()), recorder


def test_every_request_gets_its_own_answer_and_rows_never_exceed_the_batch() -> None:
    rows = FakeRows()
    outcomes, rec = run_all([job(f"r{i}", tokens=3 + i % 4) for i in range(10)], rows)
    assert [o.text for o in outcomes] == [f"r{i}" for i in range(10)]
    assert [o.completion_tokens for o in outcomes] == [3 + i % 4 for i in range(10)]
    assert max(len(s) for s in rows.steps) == 4
    assert rec.tokens == sum(3 + i % 4 for i in range(10))


def test_a_finished_row_leaves_and_a_waiting_request_joins_before_the_longest_ends() -> None:
    rows = FakeRows()
    outcomes, _ = run_all([job("long", tokens=30), job("short", tokens=2), job("next", tokens=2)], rows, max_batch=2)
    assert all(o.ok for o in outcomes)
    joined = next(i for i, s in enumerate(rows.steps) if "next" in s)
    assert "long" in rows.steps[joined]            # it ran next to the long one...
    assert len(rows.steps) < 30 + 2                # ...so the whole took the long one's steps, not the sum


def test_requests_that_sample_differently_share_steps() -> None:
    rows = FakeRows()
    outcomes, _ = run_all([job("a", key=KEY), job("b", key=OTHER_KEY)], rows)
    assert [o.text for o in outcomes] == ["a", "b"]
    assert ["a", "b"] in rows.steps


def test_rows_in_flight_stay_within_the_kv_budget_and_nothing_starves() -> None:
    rows = FakeRows()
    # Each request holds 10 + 6 tokens: a 40-token budget takes two at a time, though the cap is 4.
    outcomes, _ = run_all([job(f"r{i}", tokens=6) for i in range(5)], rows, kv_budget=40)
    assert [o.text for o in outcomes] == [f"r{i}" for i in range(5)]
    assert max(len(s) for s in rows.steps) == 2
    assert rows.prefilled == [f"r{i}" for i in range(5)]  # arrival order


def test_oom_joining_rows_in_flight_waits_for_room_and_lowers_the_cap() -> None:
    def on_prefill(batch: list[Job]) -> None:
        if len(batch) >= 3:
            raise FakeOOM("CUDA out of memory")

    rows = FakeRows(on_prefill=on_prefill)
    outcomes, rec = run_all([job(f"r{i}") for i in range(8)], rows)
    assert [o.text for o in outcomes] == [f"r{i}" for i in range(8)]
    assert "split" in rec.ooms and rec.caps[0] == 2
    assert max(len(s) for s in rows.steps) == 2


def test_oom_in_a_step_sends_the_newer_rows_back_and_each_still_gets_its_whole_answer() -> None:
    failed = {"n": 0}

    def on_step(batch: list[Job]) -> None:
        if len(batch) == 4 and failed["n"] == 0:
            failed["n"] += 1
            raise FakeOOM("out of memory")

    rows = FakeRows(on_step=on_step)
    outcomes, rec = run_all([job(f"r{i}", tokens=5) for i in range(4)], rows)
    assert [(o.text, o.completion_tokens) for o in outcomes] == [(f"r{i}", 5) for i in range(4)]
    assert rec.ooms == ["split"] and rec.caps[0] == 2
    assert rows.prefilled.count("r3") == 2 and rows.prefilled.count("r0") == 1  # the newer half started over


def test_single_request_oom_retries_smaller_then_answers_503() -> None:
    shrunk: list[Job] = []

    def shrink(j: Job) -> Job:
        smaller = Job(j.messages, j.images, j.key, j.max_new_tokens, None, shrunk=True)
        shrunk.append(smaller)
        return smaller

    def unless_shrunk(batch: list[Job]) -> None:
        if not batch[-1].shrunk:
            raise FakeOOM("out of memory")

    outcomes, rec = run_all([job("big", images=1)], FakeRows(on_prefill=unless_shrunk), shrink=shrink)
    assert outcomes[0].ok and rec.ooms == ["shrink"] and len(shrunk) == 1

    def never(batch: list[Job]) -> None:
        raise FakeOOM("out of memory")

    outcomes, rec = run_all([job("huge", images=1)], FakeRows(on_prefill=never), shrink=shrink)
    assert outcomes[0].error_status == 503 and "out of GPU memory" in outcomes[0].error_message
    assert rec.ooms == ["shrink", "rejected"]


def test_a_request_that_breaks_its_prefill_is_answered_500_alone() -> None:
    def poison(batch: list[Job]) -> None:
        if name(batch[-1]) == "poison":
            raise ValueError("bad request")

    outcomes, _ = run_all([job("a"), job("poison"), job("c")], FakeRows(on_prefill=poison))
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].error_status == 500


def test_cap_recovers_after_a_run_of_good_joins() -> None:
    calls = {"n": 0}

    def on_prefill(batch: list[Job]) -> None:
        calls["n"] += 1
        if calls["n"] == 3 and len(batch) == 3:
            raise FakeOOM("out of memory")

    async def main() -> Recorder:
        rec = Recorder()
        batcher = Batcher(FakeRows(on_prefill=on_prefill), max_batch=4, wait_s=0.05,
                          is_oom=lambda e: isinstance(e, FakeOOM), observer=rec)
        await batcher.start()
        await asyncio.gather(*(batcher.submit(job(str(i), tokens=8)) for i in range(4)))
        for i in range(RECOVER_AFTER_BATCHES + 1):
            await batcher.submit(job(f"s{i}"))
        await batcher.stop()
        return rec

    rec = asyncio.run(main())
    assert rec.caps[0] == 2 and rec.caps[-1] == 3


def test_a_cancelled_request_is_dropped_at_the_next_step_and_its_slot_goes_to_the_next() -> None:
    long, waiting, queued_then_cancelled = job("long", tokens=10_000), job("next", tokens=3), job("gone", tokens=3)
    rows = FakeRows()

    def on_step(batch: list[Job]) -> None:
        if len(rows.steps) == 5:  # the client goes away while the long one is generating
            long.cancelled = True
            queued_then_cancelled.cancelled = True

    rows.on_step = on_step
    outcomes, rec = run_all([long, queued_then_cancelled, waiting], rows, max_batch=1)
    assert outcomes[0].error_status == CANCELLED_STATUS and outcomes[0].completion_tokens < 10
    assert outcomes[1].error_status == CANCELLED_STATUS and "gone" not in rows.prefilled
    assert outcomes[2].ok and outcomes[2].text == "next"
    assert len(rows.steps) < 10
    assert rec.tokens == outcomes[0].completion_tokens + 3  # nothing generated for it after the drop
