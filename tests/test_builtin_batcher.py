"""The batcher with a fake model: batching, no starvation, OOM split/shrink/503, isolation."""

from __future__ import annotations

import asyncio

from mineru_fit.engines.builtin.batcher import RECOVER_AFTER_BATCHES, Batcher, BatchObserver
from mineru_fit.engines.builtin.jobs import Job, Outcome, SamplingKey

KEY = SamplingKey(0.0, 1.0, None, 1.0, 0.0, 0.0, 0, (), True)
OTHER_KEY = SamplingKey(0.7, 0.9, None, 1.0, 0.0, 0.0, 0, (), True)


class FakeOOM(Exception):
    pass


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.ooms: list[str] = []
        self.caps: list[int] = []

    def batch_started(self, size: int, tokens: int) -> None:
        self.sizes.append(size)

    def oom(self, action: str) -> None:
        self.ooms.append(action)

    def cap_changed(self, cap: int) -> None:
        self.caps.append(cap)


def job(name: str, key: SamplingKey = KEY, images: int = 0) -> Job:
    return Job([{"role": "user", "content": name}], [object()] * images, key, 4, None)


def run_all(jobs: list[Job], runner, *, max_batch: int = 4, shrink=None) -> tuple[list[Outcome], Recorder]:
    recorder = Recorder()

    async def main() -> list[Outcome]:
        batcher = Batcher(runner, max_batch=max_batch, wait_s=0.05, is_oom=lambda e: isinstance(e, FakeOOM),
                          shrink=shrink, observer=recorder)
        await batcher.start()
        try:
            return list(await asyncio.gather(*(batcher.submit(j) for j in jobs)))
        finally:
            await batcher.stop()

    return asyncio.run(main()), recorder


def echo(jobs: list[Job]) -> list[Outcome]:
    return [Outcome(text=j.messages[0]["content"]) for j in jobs]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer() -> None:
    jobs = [job(f"r{i}") for i in range(10)]
    outcomes, rec = run_all(jobs, echo)
    assert [o.text for o in outcomes] == [f"r{i}" for i in range(10)]
    assert max(rec.sizes) == 4 and sum(rec.sizes) == 10


def test_different_sampling_never_shares_a_batch_and_nothing_starves() -> None:
    jobs = [job("a", KEY), job("b", OTHER_KEY), job("c", KEY), job("d", OTHER_KEY)]
    seen: list[set[SamplingKey]] = []

    def runner(batch: list[Job]) -> list[Outcome]:
        seen.append({j.key for j in batch})
        return echo(batch)

    outcomes, _ = run_all(jobs, runner)
    assert [o.text for o in outcomes] == ["a", "b", "c", "d"]
    assert all(len(keys) == 1 for keys in seen)


def test_oom_splits_the_batch_and_lowers_the_cap_without_losing_a_request() -> None:
    def runner(batch: list[Job]) -> list[Outcome]:
        if len(batch) >= 3:
            raise FakeOOM("CUDA out of memory")
        return echo(batch)

    jobs = [job(f"r{i}") for i in range(8)]
    outcomes, rec = run_all(jobs, runner)
    assert [o.text for o in outcomes] == [f"r{i}" for i in range(8)]
    assert "split" in rec.ooms and rec.caps and rec.caps[0] == 2


def test_single_request_oom_retries_smaller_then_answers_503() -> None:
    shrunk: list[Job] = []

    def shrink(j: Job) -> Job:
        smaller = Job(j.messages, j.images, j.key, j.max_new_tokens, None, shrunk=True)
        shrunk.append(smaller)
        return smaller

    def fits_when_shrunk(batch: list[Job]) -> list[Outcome]:
        if not batch[0].shrunk:
            raise FakeOOM("out of memory")
        return echo(batch)

    outcomes, rec = run_all([job("big", images=1)], fits_when_shrunk, shrink=shrink)
    assert outcomes[0].ok and rec.ooms == ["shrink"] and len(shrunk) == 1

    def never_fits(batch: list[Job]) -> list[Outcome]:
        raise FakeOOM("out of memory")

    outcomes, rec = run_all([job("huge", images=1)], never_fits, shrink=shrink)
    assert outcomes[0].error_status == 503 and "out of GPU memory" in outcomes[0].error_message
    assert rec.ooms == ["shrink", "rejected"]


def test_a_request_that_breaks_the_batch_is_isolated() -> None:
    def runner(batch: list[Job]) -> list[Outcome]:
        if any(j.messages[0]["content"] == "poison" for j in batch):
            raise ValueError("bad request")
        return echo(batch)

    outcomes, _ = run_all([job("a"), job("poison"), job("c")], runner)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].error_status == 500


def test_cap_recovers_after_a_run_of_successes() -> None:
    calls = {"n": 0}

    def runner(batch: list[Job]) -> list[Outcome]:
        calls["n"] += 1
        if calls["n"] == 1 and len(batch) == 4:
            raise FakeOOM("out of memory")
        return echo(batch)

    async def main() -> Recorder:
        rec = Recorder()
        batcher = Batcher(runner, max_batch=4, wait_s=0.0, is_oom=lambda e: isinstance(e, FakeOOM), observer=rec)
        await batcher.start()
        await asyncio.gather(*(batcher.submit(job(str(i))) for i in range(4)))
        for i in range(RECOVER_AFTER_BATCHES + 1):
            await batcher.submit(job(f"s{i}"))
        await batcher.stop()
        return rec

    rec = asyncio.run(main())
    assert rec.caps[0] == 2 and rec.caps[-1] == 3
