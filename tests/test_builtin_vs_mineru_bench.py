"""benchmarks/engine_vs_mineru.py at tiny size: both sides generate the same tokens and the JSON
carries what docs/builtin-engine.md reports (no speed assertion: speed lives in the benchmark)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("mineru_vl_utils")

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_run_writes_every_side_concurrency_level_and_verdict(tmp_path: Path) -> None:
    out = tmp_path / "engine_vs_mineru.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine_vs_mineru.py"), "--tiny", "--rounds", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["command"].startswith("python benchmarks/engine_vs_mineru.py --tiny")
    runs = result["runs"]
    # Every run generated exactly the workload's tokens, on both sides, at concurrency 1, 4 and 8.
    assert {(r["side"], r["concurrency"]) for r in runs} == {
        (side, c) for side in ("builtin", "mineru_transformers") for c in (1, 4, 8)}
    assert all(r["tokens"] == result["workload"]["tokens_per_run"] and r["peak_rss_bytes"] > 0 for r in runs)
    summary = result["summary"]
    assert set(summary["by_concurrency"]) == {"1", "4", "8"}
    assert set(summary["concurrency_1_by_level"]) == {"none", "basic", "aggressive", "extreme"}
    assert all(m["plan_predicted_peak_bytes"] > 0 for m in summary["memory_vs_plan"])
    verdicts = summary["must_hold"]
    assert set(verdicts) == {"concurrency_8_at_least_1.5x", "concurrency_1_at_least_0.95x_at_every_level",
                             "peak_memory_within_plan"}
    assert all(isinstance(v["met"], bool) for v in verdicts.values())

    # --memory: the engine alone, a fresh process per configuration, becomes the memory verdict.
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine_vs_mineru.py"), "--tiny", "--memory",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    isolated = result["memory_isolated"]["runs"]
    # The tiny model's levels share one context: concurrency 1, 4 and 8 at it, each measured.
    assert [(r["concurrency"], r["max_model_len"]) for r in isolated] == [(1, 2048), (4, 2048), (8, 2048)]
    assert all(r["tokens"] == result["workload"]["tokens_per_run"] for r in isolated)
    assert all(0 < r["peak_above_baseline_bytes"] and r["plan_predicted_peak_bytes"] > 0 for r in isolated)
    verdict = result["summary"]["must_hold"]["peak_memory_within_plan"]
    assert verdict["measure"].startswith("the engine alone")
    assert verdict["met"] == all(r["peak_above_baseline_bytes"] <= r["plan_predicted_peak_bytes"] for r in isolated)


def test_ceiling_times_the_prefill_no_scheduler_removes(tmp_path: Path) -> None:
    out = tmp_path / "engine_ceiling.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine_ceiling.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    # MinerU generated the whole workload (2 pages of the tiny shape: 56 tokens), the engine decoded.
    assert result["mineru_tokens"] == 56 and result["engine_decode_steps"] > 0
    assert result["engine_prefill_s"] > 0 and result["mineru_concurrency_8_s"] > 0
    # The ceiling leaves decode out, so it is never below what this engine reached with its decode.
    assert result["ceiling_ratio_free_decode"] >= result["ratio_prefill_alone_then_decode_together"] > 0


def test_a_gpu_result_is_judged_by_torchs_reserved_peak_and_the_plan_made_there(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import engine_vs_mineru as bench

    gib = 2**30

    def run(side: str, concurrency: int, tok_s: float, reserved: float, **extra: object) -> dict:
        return {"side": side, "concurrency": concurrency, "round": 0, "tokens_per_s": tok_s, "pages_per_s": tok_s / 768,
                "peak_rss_bytes": 3 * gib, "rss_before_bytes": 3 * gib, "torch_peak_reserved_bytes": int(reserved * gib),
                "max_model_len": 32768 if side == "builtin" else None, **extra}

    result = {"device": "cuda", "runs": [
        run("builtin", 8, 160.0, 4.0, plan_predicted_peak_bytes=int(6.5 * gib)),
        run("mineru_transformers", 8, 100.0, 3.5),
        run("builtin", 1, 40.0, 3.0, plan_predicted_peak_bytes=int(3.0 * gib)),  # over its plan once the context counts
        run("mineru_transformers", 1, 41.0, 3.0)],
        "level_contexts": {"none": 32768, "basic": 8192, "aggressive": 4096, "extreme": 2048},
        "process_rss_before_model_bytes": gib, "weights_bytes": 2 * gib, "cuda_context_bytes": gib // 2,
        "model_dir": str(tmp_path / "no-such-model"), "skipped": ["concurrency 1 builtin at basic's 8192"]}
    summary = bench.summarize(result)  # no planner call: a GPU result keeps the plan made for that GPU
    assert summary["by_concurrency"]["8"]["ratio"] == 1.6
    assert summary["by_concurrency"]["8"]["builtin_peak_torch_reserved_bytes"] == 4 * gib
    rows = {m["concurrency"]: m for m in summary["memory_vs_plan"]}
    assert rows[8]["reserved_plus_context_bytes"] == int(4.5 * gib) and rows[8]["within"] is True
    assert rows[1]["within"] is False
    must = summary["must_hold"]
    assert must["concurrency_8_at_least_1.5x"]["met"] is True
    # Levels the time box left out are not measured, so the concurrency-1 verdict is not "met".
    assert must["concurrency_1_at_least_0.95x_at_every_level"]["met"] is None
    assert must["peak_memory_within_plan"]["met"] is None and "memory table" in must["peak_memory_within_plan"]["measure"]
    assert summary["skipped"] == ["concurrency 1 builtin at basic's 8192"]


def test_openmp_pools_times_the_engine_before_and_after_minerus_side_ran(tmp_path: Path) -> None:
    out = tmp_path / "openmp_pools.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "openmp_pools.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    phases = json.loads(out.read_text())["phases"]
    assert [p["phase"] for p in phases] == ["before MinerU ran", "after MinerU ran in a thread of its own",
                                            "after MinerU ran in the main thread", "again, later"]
    # The same work each time (speed lives in the JSON, not here).
    assert len({(p["tokens"], p["decode_steps"]) for p in phases}) == 1 and phases[0]["decode_step_ms"] > 0
