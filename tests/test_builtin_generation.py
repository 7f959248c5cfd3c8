"""The built-in engine's decode loop on a tiny random Qwen2-VL: the same tokens as transformers'
generate, KV that follows the tokens in flight within the plan, per-request seeds, cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from fixtures.tiny_qwen2vl import build_tiny_qwen2vl  # noqa: E402
from mineru_fit.engines.builtin.batcher import Batcher  # noqa: E402
from mineru_fit.engines.builtin.generation import Generator  # noqa: E402
from mineru_fit.engines.builtin.jobs import CANCELLED_STATUS, Job, Outcome, SamplingKey  # noqa: E402
from mineru_fit.engines.builtin.loader import load_model  # noqa: E402
from mineru_fit.engines.builtin.metrics import EngineMetrics  # noqa: E402
from mineru_fit.engines.builtin.options import BuiltinOptions  # noqa: E402
from mineru_fit.models import load_spec  # noqa: E402
from mineru_fit.planner import Hardware, PlanRequest, make_report  # noqa: E402
from mineru_fit.units import GIB  # noqa: E402

GREEDY = SamplingKey.from_request(temperature=0, ignore_eos=True)
SAMPLED = SamplingKey.from_request(temperature=1.0, ignore_eos=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> Any:
    return load_model(BuiltinOptions(model=str(model_dir), device="cpu", dtype="float32", max_model_len=256,
                                     max_new_tokens=16, max_image_pixels=64 * 28 * 28))


def request(gen: Generator, width: int, tokens: int, key: SamplingKey = GREEDY, text: str = "Text Recognition:",
            seed: Optional[int] = None) -> Job:
    image = Image.new("RGB", (width, 80), (width % 251, 40, 90))
    job = Job([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}], [image], key,
              tokens, None, seed=seed)
    gen.encode(job)
    return job


def serve(gen: Generator, jobs: list[Job], *, max_batch: int, kv_budget: Optional[int] = None,
          observer: Any = None, during: Any = None) -> list[Outcome]:
    async def main() -> list[Outcome]:
        batcher = Batcher(gen, max_batch=max_batch, kv_budget_tokens=kv_budget, wait_s=0.05,
                          is_oom=lambda e: isinstance(e, torch.OutOfMemoryError), observer=observer)
        await batcher.start()
        try:
            tasks = [asyncio.ensure_future(batcher.submit(j)) for j in jobs]
            if during is not None:
                await during()
            return list(await asyncio.gather(*tasks))
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_rows_joining_and_leaving_get_exactly_what_generate_gives_each_alone(loaded: Any) -> None:
    gen = Generator(loaded, max_model_len=256)
    jobs = [request(gen, 100, 12), request(gen, 300, 9, text="Layout Detection:"), request(gen, 60, 15)]
    expected = []
    for job in jobs:
        out = loaded.model.generate(**job.encoded, max_new_tokens=job.max_new_tokens,
                                    min_new_tokens=job.max_new_tokens, do_sample=False,
                                    pad_token_id=loaded.pad_token_id)
        expected.append(loaded.tokenizer.decode(out[0, job.prompt_tokens:]))
    outcomes = serve(gen, jobs, max_batch=2)  # the third joins when the second leaves
    assert [o.text for o in outcomes] == expected
    assert [o.completion_tokens for o in outcomes] == [12, 9, 15]


def test_kv_held_follows_the_tokens_in_flight_and_never_exceeds_the_plans_kv_term(model_dir: Path,
                                                                                 loaded: Any) -> None:
    plan = make_report(load_spec(model_dir), Hardware.cpu(16 * GIB),
                       PlanRequest(engine="builtin", model=str(model_dir), concurrency=4, max_model_len=320,
                                   dtype="float32")).plan
    gen = Generator(loaded, max_model_len=plan.max_model_len)
    held: list[int] = []
    step = gen.step

    def watched() -> list[tuple[Job, Outcome]]:
        done = step()
        held.append(gen.cache_bytes())
        return done

    gen.step = watched  # type: ignore[method-assign]
    short = request(gen, 90, 4)
    serve(gen, [short], max_batch=plan.batch_size)
    per_token = plan.terms["kv_cache"] // (plan.batch_size * plan.max_model_len)
    # A short request holds its own tokens (plus one growth chunk), not the context it may use.
    assert max(held) <= (short.prompt_tokens + 4 + 128) * per_token < plan.max_model_len * per_token

    held.clear()
    # Fill the context: every request asks for all the output the context leaves it.
    jobs = [request(gen, 80 + 20 * i, 0) for i in range(6)]
    for job in jobs:
        job.max_new_tokens = plan.max_model_len - job.prompt_tokens
    outcomes = serve(gen, jobs, max_batch=plan.batch_size, kv_budget=plan.batch_size * plan.max_model_len)
    assert all(o.ok for o in outcomes)
    assert plan.terms["kv_cache"] * 0.75 < max(held) <= plan.terms["kv_cache"]


def test_a_seed_gives_the_same_output_alone_or_batched_with_others(loaded: Any) -> None:
    gen = Generator(loaded, max_model_len=256)

    def jobs() -> list[Job]:
        return [request(gen, 100 + 30 * i, 8, key=SAMPLED, seed=seed) for i, seed in enumerate((11, 22, 33))]

    alone = [serve(gen, [job], max_batch=1)[0].text for job in jobs()]
    together = [o.text for o in serve(gen, jobs(), max_batch=4)]
    assert together == alone
    other_seed = serve(gen, [request(gen, 100, 8, key=SAMPLED, seed=12)], max_batch=1)[0].text
    assert other_seed != alone[0]


def test_a_cancelled_request_stops_generating_and_the_waiting_one_starts(loaded: Any) -> None:
    gen = Generator(loaded, max_model_len=256)
    metrics = EngineMetrics(info={"engine": "builtin"}, kv_capacity_tokens=256)
    long = request(gen, 100, 200)
    short = request(gen, 120, 5)

    async def cancel_soon() -> None:
        while gen.steps < 5:
            await asyncio.sleep(0.005)
        long.cancelled = True  # what the HTTP side does when the client goes away

    outcomes = serve(gen, [long, short], max_batch=1, observer=metrics, during=cancel_soon)
    assert outcomes[0].error_status == CANCELLED_STATUS and outcomes[0].completion_tokens < 200
    assert outcomes[1].ok and outcomes[1].completion_tokens == 5
    generated = dict((tuple(labels.items()), value) for labels, value in metrics.snapshot()["mineru_fit_generation_tokens"])
    assert sum(generated.values()) == outcomes[0].completion_tokens + 5
    assert gen.steps < 200 and gen.cache_bytes() == 0
