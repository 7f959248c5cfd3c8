"""The guide's `mineru-sglang-server` lines, each as written (tests/guide/GUIDE.md).

Each line runs twice: as a dry run for SGLang on a card of the size the guide's section names
(`--vram N --dry-run`: SGLang needs a CUDA GPU this machine lacks), and started for real on the
built-in engine with the same flags (`mineru-fit serve --engine builtin`, the tiny random
Qwen2-VL on the CPU: its /v1/models and one layout-page request answer). A line the card cannot
hold answers one short line naming the nearest value that works.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from guide.env import environ, isolate
from guide.lines import covers, guide_lines, line

# What each line's SGLang command must carry on the guide's card (the planner's mapping of its flags).
SGLANG: dict[str, tuple[str, ...]] = {
    "mineru-sglang-server --mem-fraction-static 0.3 --load-in-4bit --max-model-len 2048": (
        "--mem-fraction-static 0.3", "--quantization bitsandbytes --load-format bitsandbytes", "--context-length 2048"),
    "mineru-sglang-server --load-in-8bit": ("--quantization fp8",),
    "mineru-sglang-server --load-in-4bit": ("--quantization bitsandbytes",),
    "mineru-sglang-server --dtype bfloat16": ("--dtype bfloat16",),
    "mineru-sglang-server --max-model-len 1024": ("--context-length 1024", "SGLANG_IMAGE_MAX_PIXELS=577024"),
    "mineru-sglang-server --max-model-len 2048": ("--context-length 2048", "SGLANG_IMAGE_MAX_PIXELS=1073296"),
    "mineru-sglang-server --max-model-len 4096": ("--context-length 4096",),
    "mineru-sglang-server --mem-fraction-static 0.4 --load-in-4bit --max-model-len 1024": (
        "--mem-fraction-static 0.4", "--quantization bitsandbytes", "--context-length 1024"),
    "mineru-sglang-server --mem-fraction-static 0.5 --load-in-8bit --max-model-len 2048": (
        "--mem-fraction-static 0.5", "--quantization fp8", "--context-length 2048"),
    "mineru-sglang-server --mem-fraction-static 0.6 --load-in-8bit --max-model-len 4096": (
        "--mem-fraction-static 0.6", "--quantization fp8", "--context-length 4096"),
    "mineru-sglang-server --mem-fraction-static 0.8 --max-model-len 8192": (
        "--mem-fraction-static 0.8", "--context-length 8192"),
    "mineru-sglang-server --mem-fraction-static 0.2 --load-in-4bit": (
        "--mem-fraction-static 0.2", "--quantization bitsandbytes"),
    "mineru-sglang-server --mem-fraction-static 0.5": ("--mem-fraction-static 0.5",),
    "mineru-sglang-server --tp-size 2": ("--tp-size 2",),
    "mineru-sglang-server --dp-size 2": ("--dp-size 2",),
}
# The lines the built-in engine starts with on this machine, and the context it then serves.
BUILTIN: dict[str, int] = {
    "mineru-sglang-server --mem-fraction-static 0.3 --load-in-4bit --max-model-len 2048": 2048,
    "mineru-sglang-server --load-in-8bit": 16384,
    "mineru-sglang-server --load-in-4bit": 16384,
    "mineru-sglang-server --dtype bfloat16": 16384,
    "mineru-sglang-server --max-model-len 1024": 1024,
    "mineru-sglang-server --max-model-len 2048": 2048,
    "mineru-sglang-server --max-model-len 4096": 4096,
    "mineru-sglang-server --mem-fraction-static 0.4 --load-in-4bit --max-model-len 1024": 1024,
    "mineru-sglang-server --mem-fraction-static 0.5 --load-in-8bit --max-model-len 2048": 2048,
    "mineru-sglang-server --mem-fraction-static 0.6 --load-in-8bit --max-model-len 4096": 4096,
    "mineru-sglang-server --mem-fraction-static 0.8 --max-model-len 8192": 8192,
    "mineru-sglang-server --mem-fraction-static 0.2 --load-in-4bit": 16384,
    "mineru-sglang-server --mem-fraction-static 0.1": 16384,  # with the block's MINERU_VIRTUAL_VRAM_SIZE=2
    "mineru-sglang-server --mem-fraction-static 0.5": 16384,
}
TINY_CONTEXT = 16384  # the tiny model's config is widened to the guide's longest context and more


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return isolate(monkeypatch)


def sglang_server(text: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    """The guide's line through the real `mineru-sglang-server` entry (in this process), plus `extra`."""
    from typer.testing import CliRunner

    from mineru_fit.cli.guide_cmd import guide_app

    guide = line(text)
    assert guide.argv[0] == "mineru-sglang-server"
    return CliRunner().invoke(guide_app, [*guide.argv[1:], *extra], env={**guide.env, **(env or {})})


def command_of(stdout: str) -> str:
    lines = stdout.splitlines()
    return lines[lines.index("command:") + 1].strip()


def budget_line(stdout: str) -> str:
    return next(x for x in stdout.splitlines() if x.startswith("# predicted peak"))


@covers(*SGLANG)
@pytest.mark.parametrize("text", list(SGLANG))
def test_each_line_plans_sglang_on_a_card_of_the_guides_size(text: str, clean_env) -> None:
    guide = line(text)
    result = sglang_server(text, "--dry-run", "--vram", str(guide.card_gib))
    assert result.exit_code == 0, (result.output, result.exception)
    command = command_of(result.stdout)
    assert " -m sglang.launch_server " in command and "--enable-metrics" in command
    for fragment in SGLANG[text]:
        assert fragment in command, (fragment, command)
    peak, budget = (float(x) for x in re.findall(r"([\d.]+) GiB", budget_line(result.stdout))[:2])
    assert peak <= budget * 0.97


@covers("mineru-sglang-server --tp-size 2", "mineru-sglang-server --dp-size 2")
@pytest.mark.parametrize("text", ["mineru-sglang-server --tp-size 2", "mineru-sglang-server --dp-size 2"])
def test_tp_and_dp_lines_plan_for_that_many_cards(text: str, clean_env) -> None:
    auto = sglang_server(text, "--dry-run", "--vram", "8")
    assert auto.exit_code == 0 and "--vram 8: each of 2 cards" in budget_line(auto.stdout)
    given = sglang_server(text, "--dry-run", "--vram", "8", "--gpus", "2")
    assert given.exit_code == 0 and command_of(given.stdout) == command_of(auto.stdout)
    short = sglang_server(text, "--dry-run", "--vram", "8", "--gpus", "1")
    assert "needs 2 GPUs but --gpus gives 1 — use --gpus 2" in str(short.exception)
    # The built-in engine runs one replica per GPU and never splits a model; this machine has no GPU.
    flags = line(text).argv[1:]
    refused = builtin_serve(None, *flags)
    assert refused.exit_code != 0 and len(str(refused.exception).splitlines()) == 1
    assert ("does not split one model" if "--tp-size" in flags else "no CUDA GPU was found") in str(refused.exception)


@covers("mineru-sglang-server --max-model-len 1024",
        "mineru-sglang-server --mem-fraction-static 0.4 --load-in-4bit --max-model-len 1024")
@pytest.mark.parametrize("text", ["mineru-sglang-server --max-model-len 1024",
                                  "mineru-sglang-server --mem-fraction-static 0.4 --load-in-4bit --max-model-len 1024"])
def test_a_1024_context_is_accepted_with_a_warning_naming_what_is_degraded(text: str, clean_env) -> None:
    result = sglang_server(text, "--dry-run", "--vram", "8")
    assert result.exit_code == 0, (result.output, result.exception)
    [warning] = [x for x in result.stdout.splitlines() if x.startswith("# warning: context")]
    assert warning == ("# warning: context 1024 shrinks MinerU's layout page to 756×756 px (from 1036×1036) and caps "
                       "every answer at 256 tokens: a longer table or text block is cut off")
    assert len(warning) < 200


@covers("export MINERU_VIRTUAL_VRAM_SIZE=2", "mineru-sglang-server --mem-fraction-static 0.1")
def test_a_card_that_cannot_hold_the_line_gets_one_short_line_naming_the_nearest_value(clean_env) -> None:
    text = "mineru-sglang-server --mem-fraction-static 0.1"
    assert line(text).env == {"MINERU_VIRTUAL_VRAM_SIZE": "2"}
    result = sglang_server(text, "--dry-run", "--vram", "8")
    message = str(result.exception)
    assert getattr(result.exception, "exit_code", None) == 2 and len(message) < 200 and "\n" not in message
    found = re.search(r"nearest that works: MINERU_VIRTUAL_VRAM_SIZE=([\d.]+) with --mem-fraction-static ([\d.]+)", message)
    assert found, message
    # The value it names works: the same line with it starts (here: plans) cleanly.
    fixed = sglang_server(text, "--dry-run", "--vram", "8", "--mem-fraction-static", found.group(2),
                          env={"MINERU_VIRTUAL_VRAM_SIZE": found.group(1)})
    assert fixed.exit_code == 0, (fixed.output, fixed.exception)
    assert f"--mem-fraction-static {found.group(2)}" in command_of(fixed.stdout)


def test_the_console_entry_prints_that_line_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = environ(MINERU_VIRTUAL_VRAM_SIZE="2")
    done = subprocess.run([str(Path(sys.executable).parent / "mineru-sglang-server"), "--mem-fraction-static", "0.1",
                           "--vram", "8", "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    [message] = done.stderr.splitlines()
    assert message.startswith("error: no sglang level fits 2.0 GiB") and len(message) < 200


# --- started for real on the built-in engine ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import json

    from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

    model = build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny"))
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = TINY_CONTEXT
    (model / "config.json").write_text(json.dumps(config))
    return model


def builtin_serve(model: Path | None, *flags: str, env: dict[str, str] | None = None) -> Any:
    from typer.testing import CliRunner

    import mineru_fit.cli.commands  # noqa: F401  (registers serve)
    from mineru_fit.cli.app import app

    model_flags = ["--model", str(model)] if model is not None else []
    return CliRunner().invoke(app, ["serve", "--engine", "builtin", *model_flags, *flags], env=env)


def start_for_real(started: list[dict[str, Any]]):
    """In place of the blocking run_server: the same options, served on a free port for one request."""
    import httpx
    from fixtures.servers import free_port, running_builtin
    from PIL import Image

    def run(options: Any) -> None:
        from base64 import b64encode
        from dataclasses import replace
        from io import BytesIO

        buffer = BytesIO()
        Image.new("RGB", (1036, 1036), "white").save(buffer, format="PNG")  # MinerU's layout page
        url = "data:image/png;base64," + b64encode(buffer.getvalue()).decode()
        with running_builtin(replace(options, port=free_port())) as (base, _):
            models = httpx.get(f"{base}/v1/models", timeout=30).json()["data"]
            reply = httpx.post(f"{base}/v1/chat/completions", timeout=120, json={
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                          {"type": "text", "text": "\nLayout Detection:"}]}],
                "max_tokens": 2, "temperature": 0})
        started.append({"options": options, "models": models, "status": reply.status_code, "body": reply.json()})

    return run


@covers(*BUILTIN)
@pytest.mark.parametrize("text", list(BUILTIN))
def test_each_line_starts_the_builtin_engine_for_real(text: str, tiny: Path, clean_env) -> None:
    from mineru_fit.engines import builtin

    started: list[dict[str, Any]] = []
    clean_env.setattr(builtin, "run_server", start_for_real(started))
    guide = line(text)
    result = builtin_serve(tiny, *guide.argv[1:], env=guide.env)
    assert result.exit_code == 0, (result.output, result.exception)
    [run] = started
    options, flags = run["options"], guide.argv[1:]
    assert options.device == "cpu" and options.max_model_len == BUILTIN[text]
    assert [m["max_model_len"] for m in run["models"]] == [BUILTIN[text]]
    assert options.load_in_4bit == ("--load-in-4bit" in flags) and options.load_in_8bit == ("--load-in-8bit" in flags)
    assert options.dtype == ("bfloat16" if "--dtype" in flags else "float32")
    assert run["status"] == 200, run["body"]
    usage = run["body"]["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= BUILTIN[text]
    if "--mem-fraction-static" in flags:  # a GPU share: said, not silently dropped, on the CPU
        assert "does not apply (the budget is RAM)" in result.output


def test_every_line_here_is_a_line_of_the_guide() -> None:
    texts = {g.text for g in guide_lines()}
    assert set(SGLANG) <= texts and set(BUILTIN) <= texts
    assert all(shlex.split(t)[0] == "mineru-sglang-server" for t in [*SGLANG, *BUILTIN])
