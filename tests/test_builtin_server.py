"""The real built-in server on loopback with a tiny random Qwen2-VL: the output is noise,
the protocol, batching and limits are real. Driven by the openai client and MinerU's client."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fixtures.servers import free_port, running_builtin, wait_healthy  # noqa: E402
from fixtures.tiny_qwen2vl import build_tiny_qwen2vl  # noqa: E402

from mineru_fit.engines.builtin.options import BuiltinOptions  # noqa: E402

CONTEXT = 256
OUTPUT_CAP = 16


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def page(width: int = 850, height: int = 1100) -> Image.Image:
    """A rendered page: a heading, a paragraph of lines, a table grid."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((60, 50), "1 Introduction", fill="black")
    for i in range(12):
        draw.text((60, 100 + 18 * i), "MinerU parses documents on the GPU you have. " * 2, fill="black")
    for r in range(4):
        for c in range(3):
            draw.rectangle((60 + 150 * c, 400 + 40 * r, 210 + 150 * c, 440 + 40 * r), outline="black")
    return image


def ask(text: str, image: Image.Image | None = None, **extra) -> dict:
    content = ([{"type": "image_url", "image_url": {"url": data_url(image)}}] if image is not None else [])
    content.append({"type": "text", "text": text})
    return {"messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


def options(model_dir: Path, **overrides) -> BuiltinOptions:
    values = dict(model=str(model_dir), device="cpu", dtype="float32", port=free_port(), max_model_len=CONTEXT,
                  max_new_tokens=OUTPUT_CAP, max_batch_size=4, max_image_pixels=64 * 28 * 28, batch_wait_ms=30)
    values.update(overrides)
    return BuiltinOptions(**values)


@pytest.fixture(scope="module")
def server(model_dir: Path):
    with running_builtin(options(model_dir, served_model_name="MinerU2.5-tiny")) as (base, state):
        yield base, state


def metric(base: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in /metrics")


def test_openai_client_lists_one_model_and_gets_a_completion(server) -> None:
    from openai import OpenAI

    base, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key="none")
    assert [m.id for m in client.models.list().data] == ["MinerU2.5-tiny"]
    reply = client.chat.completions.create(
        model="MinerU2.5-tiny", messages=ask("\nText Recognition:", page(300, 200))["messages"], max_tokens=5,
        temperature=0,
    )
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage.completion_tokens <= 5 and reply.usage.prompt_tokens > 20
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_mineru_client_two_step_extract_on_a_rendered_page(server) -> None:
    from mineru_vl_utils import MinerUClient

    base, _ = server
    before = metric(base, "mineru_fit_requests_total", '{status="200"}')
    client = MinerUClient(backend="http-client", server_url=base, use_tqdm=False)
    blocks = client.two_step_extract(page())
    assert isinstance(blocks, list)  # noise parses to few or no blocks; the round trip is what counts
    assert metric(base, "mineru_fit_requests_total", '{status="200"}') > before


def test_requests_without_max_tokens_get_the_planned_output_cap(server) -> None:
    base, _ = server
    body = httpx.post(f"{base}/v1/chat/completions", json=ask("\nText Recognition:", page(200, 200), temperature=0),
                      timeout=60).json()
    assert body["usage"]["completion_tokens"] <= OUTPUT_CAP


def test_max_tokens_is_clamped_so_prompt_and_output_fit_the_context(server) -> None:
    base, _ = server
    body = httpx.post(f"{base}/v1/chat/completions",
                      json=ask("\nText Recognition:", page(200, 200), temperature=0, max_tokens=CONTEXT - 1),
                      timeout=120).json()
    usage = body["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= CONTEXT
    assert usage["completion_tokens"] == CONTEXT - usage["prompt_tokens"]  # noise never stops early


def test_concurrent_requests_are_batched_and_each_keeps_its_own_max_tokens(server) -> None:
    base, _ = server
    changes_before = metric(base, "mineru_fit_batch_size_count")
    alone_before = metric(base, "mineru_fit_batch_size_bucket", '{le="1.0"}')

    def one(i: int) -> dict:
        request = ask("\nText Recognition:", page(120 + 10 * i, 100), temperature=0, max_tokens=3 + i % 4)
        return httpx.post(f"{base}/v1/chat/completions", json=request, timeout=120).json()

    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(one, range(12)))
    assert [r["usage"]["completion_tokens"] for r in replies] == [3 + i % 4 for i in range(12)]
    changes = metric(base, "mineru_fit_batch_size_count") - changes_before
    alone = metric(base, "mineru_fit_batch_size_bucket", '{le="1.0"}') - alone_before
    assert alone < changes  # at times more than one request was in flight, decoding together


def test_stop_strings_and_ngram_blocking_change_the_output(server) -> None:
    base, _ = server
    plain = httpx.post(f"{base}/v1/chat/completions",
                       json=ask("\nText Recognition:", page(200, 200), temperature=0, max_tokens=12), timeout=60).json()
    text = plain["choices"][0]["message"]["content"]
    assert len(text) > 1
    stopped = httpx.post(f"{base}/v1/chat/completions",
                         json=ask("\nText Recognition:", page(200, 200), temperature=0, max_tokens=12, stop=[text[0]]),
                         timeout=60).json()
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert text[0] not in stopped["choices"][0]["message"]["content"]
    blocked = httpx.post(f"{base}/v1/chat/completions", json=ask(
        "\nText Recognition:", page(200, 200), temperature=0, max_tokens=12, vllm_xargs={"no_repeat_ngram_size": 2}),
        timeout=60).json()
    assert blocked["choices"][0]["message"]["content"] != text or len(set(text)) > 1


def test_metrics_expose_the_engine_state(server) -> None:
    base, _ = server
    text = httpx.get(f"{base}/metrics").text
    for name in ("mineru_fit_requests_running", "mineru_fit_requests_waiting", "mineru_fit_batch_size_bucket",
                 "mineru_fit_generation_tokens_total", "mineru_fit_generation_tokens_per_second",
                 'mineru_fit_oom_events_total{action="split"}', "mineru_fit_kv_cache_usage_ratio",
                 'mineru_fit_info{', "mineru_fit_batch_cap"):
        assert name in text, name


@pytest.mark.parametrize(
    "body, status, message",
    [
        (ask("\nLayout Detection:"), 400, "needs an image"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
                                                    {"type": "text", "text": "hi"}]}]}, 400, "base64"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                        + base64.b64encode(b"not an image at all").decode()}}, {"type": "text", "text": "hi"}]}]},
         400, "not an image"),
        ({**ask("hi"), "model": "gpt-4o"}, 404, "does not exist"),
        ({**ask("hi"), "max_tokens": 5000}, 400, "does not fit this server's context"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}},
                                                    {"type": "text", "text": "hi"}]}]}, 400, "remote image URLs are disabled"),
        ({**ask("hi"), "stream": True}, 400, "streaming"),
        ({"messages": []}, 400, "messages"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_clear_message(server, body: dict, status: int, message: str) -> None:
    base, _ = server
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize("extra", [
    {"seed": -1}, {"seed": 2**63 - 1}, {"top_k": -1}, {"top_k": 0}, {"top_k": 2**31 - 1},
    {"repetition_penalty": 0.01}, {"repetition_penalty": 100}, {"stop": ["<|im_end|>", "\n\n", "Human:", "x" * 14]},
    {"vllm_xargs": {"no_repeat_ngram_size": "3"}}, {"no_repeat_ngram_size": CONTEXT},
    {"temperature": 1e-300},  # greedy, as vLLM does below 1e-5 (dividing the logits by it gave inf: a 500)
])
def test_values_at_the_edge_of_the_limits_are_served(server, extra: dict) -> None:
    base, _ = server
    response = httpx.post(f"{base}/v1/chat/completions",
                          json={**ask("\nText Recognition:", page(200, 200), temperature=0.7, max_tokens=3), **extra},
                          timeout=60)
    assert response.status_code == 200, response.text


def test_malformed_json_and_a_huge_image_are_refused(server) -> None:
    base, _ = server
    response = httpx.post(f"{base}/v1/chat/completions", content=b'{"messages": [', timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    huge = Image.new("1", (20000, 20000))  # 1-bit: 50 MB in memory, a small PNG
    response = httpx.post(f"{base}/v1/chat/completions", json=ask("\nText Recognition:", huge), timeout=120)
    assert response.status_code == 413 and "20000×20000" in response.json()["error"]["message"]
    assert httpx.get(f"{base}/health").status_code == 200


def test_oom_in_a_batch_splits_it_and_every_request_is_answered(model_dir: Path) -> None:
    from mineru_fit.engines.builtin.generation import FaultInjection

    with running_builtin(options(model_dir), FaultInjection(min_batch=3)) as (base, _):
        def one(i: int) -> int:
            request = ask("\nText Recognition:", page(100 + i, 100), temperature=0, max_tokens=2)
            return httpx.post(f"{base}/v1/chat/completions", json=request, timeout=120).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(8)))
        assert statuses == [200] * 8
        assert metric(base, "mineru_fit_oom_events_total", '{action="split"}') >= 1
        assert metric(base, "mineru_fit_batch_cap") <= 2


def test_a_request_too_big_alone_is_retried_smaller_or_answered_503(model_dir: Path) -> None:
    from mineru_fit.engines.builtin.generation import FaultInjection

    big = page(600, 600)  # capped to 64×28×28 = 50176 px (224×224); OOM from 40000 px, half of it fits
    with running_builtin(options(model_dir), FaultInjection(min_pixels=40000)) as (base, _):
        response = httpx.post(f"{base}/v1/chat/completions", json=ask("\nText Recognition:", big, max_tokens=2), timeout=60)
        assert response.status_code == 200
        assert metric(base, "mineru_fit_oom_events_total", '{action="shrink"}') == 1
    with running_builtin(options(model_dir), FaultInjection(min_batch=1)) as (base, _):
        response = httpx.post(f"{base}/v1/chat/completions", json=ask("\nText Recognition:", big, max_tokens=2), timeout=60)
        assert response.status_code == 503 and "out of GPU memory" in response.json()["error"]["message"]
        assert metric(base, "mineru_fit_oom_events_total", '{action="rejected"}') == 1
        assert httpx.get(f"{base}/health").status_code == 200


def test_mineru_fit_serve_builtin_runs_the_server_and_announces_it(model_dir: Path, tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINERU_", "CUDA_"))}
    env["MINERU_FIT_STATE_DIR"] = str(tmp_path)
    cli = Path(sys.executable).parent / "mineru-fit"
    proc = subprocess.Popen([str(cli), "serve", "--engine", "builtin", "--model", str(model_dir), "--port", str(port),
                             "--max-new-tokens", "4", "--served-model-name", "tiny"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout_s=120, proc=proc)
        body = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                          json=ask("\nText Recognition:", page(200, 100)), timeout=60).json()
        assert body["model"] == "tiny" and body["usage"]["completion_tokens"] <= 4
        [record] = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
        assert record["engine"] == "builtin" and record["metrics_url"].endswith(f":{port}/metrics")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert list((tmp_path / "runs").glob("*.json")) == []  # the record goes with the server
