"""The planner's engine accounting against public startup logs: records in, comparisons out. Pure.

A record (tests/data/engine_logs/*.json) holds what a public log says about one engine start:
the inputs the engine was given, the figures it printed, and how reliable each input is.
`compare` predicts the same figures with engine_memory.py; `summarize` gives the error per
engine and version. benchmarks/planner_vs_logs.py and tests/test_planner_logs.py both use it.
vLLM and SGLang records are compared with each engine's own accounting (engine_memory.py).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from mineru_fit.models.spec import ModelSpec
from mineru_fit.planner import constants as C
from mineru_fit.planner import terms as T
from mineru_fit.planner.engine_memory import (
    engine_weight_bytes, sglang_default_fraction, sglang_memory, sglang_vlm_fraction, sglang_weight_bytes, vllm_memory,
)
from mineru_fit.planner.engine_versions import sglang_rules, vllm_rules
from mineru_fit.planner.levels import Quant
from mineru_fit.units import GIB

# Rule sets a record with an unknown vLLM version is checked against: one per accounting change.
VLLM_RULE_VERSIONS = ("0.8.5", "0.10.1.1", "0.11.0", "0.23.0")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSource(_Strict):
    repo: Optional[str] = None
    path: Optional[str] = None
    commit: Optional[str] = None
    url: Optional[str] = None
    issue: Optional[int] = None
    index_id: Optional[str] = Field(None, description="id of the file in the public code index it was found in")
    note: Optional[str] = None


class LogInputs(_Strict):
    """What the engine was started with (None: not known)."""

    total_gib: Optional[float] = Field(None, description="The card's total as the engine saw it.")
    gpu_memory_utilization: Optional[float] = None
    max_model_len: Optional[int] = None
    max_num_batched_tokens: Optional[int] = None
    max_num_seqs: Optional[int] = None
    video_profiled: Optional[bool] = None
    images_per_prompt: int = 1
    max_pixels: Optional[int] = None
    cuda_graphs: bool = True
    tp_size: int = 1
    quantization: Optional[str] = None
    # SGLang: the free memory it measured once its CUDA context existed ("Load weight begin. avail
    # mem", or avail mem at load end + mem usage), the card's capacity as server_args reads it
    # (nvidia-smi MiB, for its default fraction), a user's --mem-fraction-static (None: the
    # default), --max-total-tokens, and whether SGLang shrinks the fraction for a multimodal model.
    free_at_start_gib: Optional[float] = None
    gpu_mem_mib: Optional[int] = None
    mem_fraction_static: Optional[float] = None
    max_total_tokens: Optional[int] = None
    chunked_prefill_size: Optional[int] = None
    cuda_graph_max_bs: Optional[int] = None
    vlm_shrink: bool = True


class LoggedFigures(_Strict):
    started: bool
    failure: Optional[str] = None
    # Only a start that failed for memory (no room for the KV cache, out of memory) is one the
    # planner must predict as not fitting; a kernel or import error says nothing about memory.
    failure_kind: Optional[Literal["memory", "other"]] = None
    weights_gib: Optional[float] = None
    kv_gib: Optional[float] = None
    kv_tokens: Optional[int] = None
    max_concurrency: Optional[float] = None
    graph_gib: Optional[float] = None
    activation_gib: Optional[float] = None
    non_torch_gib: Optional[float] = None
    fraction: Optional[float] = Field(None, description="SGLang: the mem_fraction_static it ended up using, as logged.")


class LogRecord(_Strict):
    id: str
    model: str
    config: str = Field(description="'shipped:<name>' or a path under tests/data/engine_logs/")
    preprocessor: Optional[str] = None
    family: Literal["qwen2_vl", "qwen2_5_vl", "mineru2_qwen"]
    engine: Literal["vllm", "sglang"]
    engine_version: str
    engine_mode: Optional[Literal["v0", "v1"]] = None
    source: LogSource
    gpu: str
    inputs: LogInputs
    reliability: dict[str, str]
    flags: str
    logged: LoggedFigures
    excerpt: list[str]
    full_figures: bool = Field(description="Every input known: counts toward the KV error.")
    exclusion: Optional[str] = Field(None, description="Why a record is not in the full-figure set.")
    split: Literal["fit", "holdout"] = "fit"
    failed_start_check: Literal["as_logged", "any_utilization", "every_version"] = "as_logged"
    assumed: dict[str, object] = Field(
        default_factory=dict,
        description="Plausible values for unknown inputs: predicted apart ('under assumptions'), never in the error.",
    )
    weights_sized: bool = Field(
        True, description="False: the planner does not size this model; the KV check uses the logged weights.")


class Comparison(_Strict):
    id: str
    engine: str
    engine_version: str
    family: str
    full_figures: bool
    split: str
    logged_weights_gib: Optional[float]
    predicted_weights_gib: Optional[float]
    weights_error: Optional[float]
    logged_kv_gib: Optional[float]
    predicted_kv_gib: Optional[float]
    logged_kv_tokens: Optional[int]
    predicted_kv_tokens: Optional[int]
    kv_tokens_error: Optional[float]
    kv_gib_error: Optional[float]
    logged_failed: bool
    predicted_fits: Optional[bool]
    assumed_kv_tokens_error: Optional[float] = None
    assumed_kv_gib_error: Optional[float] = None
    logged_fraction: Optional[float] = None
    predicted_fraction: Optional[float] = None
    kv_capped: bool = False
    note: str = ""


def _rel(predicted: float, logged: float) -> float:
    return (predicted - logged) / abs(logged)


def _rules_for(record: LogRecord) -> list:
    if record.engine_version in ("unknown", "") or record.failed_start_check == "every_version":
        return [vllm_rules(v, record.engine_mode) for v in VLLM_RULE_VERSIONS]
    return [vllm_rules(record.engine_version, record.engine_mode)]


def compare(record: LogRecord, spec: ModelSpec) -> Comparison:
    """Predicted against logged weights, KV bytes and tokens, and whether the start fits.

    A record with `assumed` inputs is also predicted with them filled in; that error is reported
    apart and never counted.
    """
    result = _compare(record, spec)
    if not record.assumed:
        return result
    filled = record.model_copy(update={
        "inputs": record.inputs.model_copy(update=record.assumed),
        "assumed": {},
        "engine_version": str(record.assumed.get("engine_version", record.engine_version)),
    })
    guess = _compare(filled, spec)
    return result.model_copy(update={
        "assumed_kv_tokens_error": guess.kv_tokens_error, "assumed_kv_gib_error": guess.kv_gib_error,
    })


def _compare(record: LogRecord, spec: ModelSpec) -> Comparison:
    if record.engine == "sglang":
        return _compare_sglang(record, spec)
    i = record.inputs
    quant = i.quantization
    note = ""
    weights: Optional[float] = None
    if quant is None:
        weights = engine_weight_bytes(spec, 2, Quant.none, i.tp_size, rotary_copies=C.VLLM_MROPE_CACHE_COPIES) / GIB
    else:
        note = f"weights not compared ({quant} is not a format the planner sizes)"
    w_err = _rel(weights, record.logged.weights_gib) if weights is not None and record.logged.weights_gib else None

    pred_kv = pred_tokens = None
    fits: Optional[bool] = None
    known = all(v is not None for v in (i.max_model_len, i.max_num_batched_tokens, i.max_num_seqs, i.video_profiled))
    if record.engine_mode == "v0":
        known = all(v is not None for v in (i.max_model_len, i.max_num_batched_tokens, i.max_num_seqs))
    # The largest image decides the profile: it must come from the log or the model's own files.
    known = known and (i.max_pixels is not None or record.preprocessor is not None or record.config.startswith("shipped:"))
    if i.total_gib is not None and known and quant is None:
        utils = [i.gpu_memory_utilization] if i.gpu_memory_utilization is not None else []
        if record.failed_start_check == "any_utilization":
            utils = [1.0]  # the most memory any utilization could give
        outcomes = []
        for rules in _rules_for(record):
            for util in utils:
                mem = vllm_memory(
                    spec, rules, total_bytes=int(i.total_gib * GIB), utilization=util,
                    max_model_len=i.max_model_len, max_num_batched_tokens=i.max_num_batched_tokens,
                    max_num_seqs=i.max_num_seqs, max_pixels=i.max_pixels or spec.image.max_pixels,
                    video_profiled=bool(i.video_profiled), images_per_prompt=i.images_per_prompt,
                    tp_size=i.tp_size, cuda_graphs=i.cuda_graphs,
                )
                outcomes.append(mem)
        if outcomes:
            # With one rule set and one utilization this is the prediction; over several (version or
            # utilization unknown) the most generous one, so "does not fit" holds for all of them.
            best = max(outcomes, key=lambda m: m.kv_cache)
            pred_kv, pred_tokens = best.kv_cache / GIB, best.kv_tokens
            fits = any(m.kv_tokens >= i.max_model_len for m in outcomes)
    elif i.total_gib is not None and i.max_model_len and record.failed_start_check == "any_utilization":
        # Fewer inputs than a profile run needs, but enough to show that no utilization holds the
        # weights and one request's KV cache: the profile's activations only make it worse.
        need = (weights or 0) * GIB + T.kv_bytes_per_token(spec, 2, i.tp_size) * i.max_model_len
        fits = need <= i.total_gib * GIB
        note = "checked without the profile run: weights + one request exceed the card at any utilization"
    logged_kv_tokens = record.logged.kv_tokens
    tok_err = (_rel(pred_tokens, logged_kv_tokens) if pred_tokens is not None and logged_kv_tokens else None)
    gib_err = (_rel(pred_kv, record.logged.kv_gib)
               if pred_kv is not None and record.logged.kv_gib not in (None, 0) else None)
    return Comparison(
        id=record.id, engine=record.engine, engine_version=record.engine_version, family=record.family,
        full_figures=record.full_figures, split=record.split,
        logged_weights_gib=record.logged.weights_gib, predicted_weights_gib=weights, weights_error=w_err,
        logged_kv_gib=record.logged.kv_gib, predicted_kv_gib=pred_kv,
        logged_kv_tokens=record.logged.kv_tokens, predicted_kv_tokens=pred_tokens,
        kv_tokens_error=tok_err, kv_gib_error=gib_err,
        logged_failed=record.logged.failure_kind == "memory", predicted_fits=fits, note=note,
    )


def sglang_fraction(record: LogRecord, spec: ModelSpec) -> Optional[float]:
    """The mem_fraction_static SGLang `record.engine_version` uses: the user's or its default for the
    card, then its multimodal shrink (engine_versions.sglang_rules). None if the card is unknown."""
    i = record.inputs
    rules = sglang_rules(record.engine_version)
    if i.mem_fraction_static is not None:
        return sglang_vlm_fraction(rules, i.mem_fraction_static, True, spec, i.vlm_shrink)
    if i.gpu_mem_mib is None:
        return None
    default = sglang_default_fraction(rules, i.gpu_mem_mib, i.tp_size, i.chunked_prefill_size, i.cuda_graph_max_bs)
    return sglang_vlm_fraction(rules, default, False, spec, i.vlm_shrink)


def _compare_sglang(record: LogRecord, spec: ModelSpec) -> Comparison:
    """SGLang: weights as its allocator reserves them, its fraction by version and card, and the KV
    pool fraction × F0 − (weights) in whole tokens, from the free memory it logged at start."""
    i, logged = record.inputs, record.logged
    note = ""
    weights: Optional[float] = None
    if record.weights_sized and i.quantization is None:
        weights = sglang_weight_bytes(spec, 2, Quant.none, i.tp_size) / GIB
    elif not record.weights_sized:
        note = "weights not predicted (a model the planner does not size): the KV check uses the logged load"
    w_err = _rel(weights, logged.weights_gib) if weights is not None and logged.weights_gib else None
    fraction = sglang_fraction(record, spec)
    load = weights if record.weights_sized else logged.weights_gib
    pred_kv = pred_tokens = None
    fits: Optional[bool] = None
    if fraction is not None and i.free_at_start_gib is not None and load is not None:
        mem = sglang_memory(spec, sglang_rules(record.engine_version), free_at_start_bytes=int(i.free_at_start_gib * GIB),
                            fraction=fraction, tp_size=i.tp_size, weights_bytes=int(load * GIB),
                            max_total_tokens=i.max_total_tokens)
        pred_kv, pred_tokens = mem.kv_cache / GIB, mem.kv_tokens
        fits = mem.kv_tokens > 0
    capped = i.max_total_tokens is not None and logged.kv_tokens == i.max_total_tokens
    if capped:
        note = (note + "; " if note else "") + "KV cut to --max-total-tokens: the profiled pool is not in the log"
    tok_err = (_rel(pred_tokens, logged.kv_tokens)
               if pred_tokens is not None and logged.kv_tokens and not capped else None)
    gib_err = (_rel(pred_kv, logged.kv_gib)
               if pred_kv is not None and logged.kv_gib and not capped else None)
    return Comparison(
        id=record.id, engine=record.engine, engine_version=record.engine_version, family=record.family,
        full_figures=record.full_figures, split=record.split,
        logged_weights_gib=logged.weights_gib, predicted_weights_gib=weights, weights_error=w_err,
        logged_kv_gib=logged.kv_gib, predicted_kv_gib=pred_kv,
        logged_kv_tokens=logged.kv_tokens, predicted_kv_tokens=pred_tokens,
        kv_tokens_error=tok_err, kv_gib_error=gib_err,
        logged_failed=logged.failure_kind == "memory", predicted_fits=fits,
        logged_fraction=logged.fraction, predicted_fraction=fraction, kv_capped=capped, note=note,
    )


def mape(values: list[float]) -> Optional[float]:
    return sum(abs(v) for v in values) / len(values) if values else None


def summarize(results: list[Comparison]) -> dict:
    """Errors per engine and per engine version, over the full-figure records."""
    out: dict = {"by_engine": {}, "by_version": {}}
    groups: dict[tuple[str, str], list[Comparison]] = {}
    for r in results:
        groups.setdefault((r.engine, "*"), []).append(r)
        groups.setdefault((r.engine, r.engine_version), []).append(r)
    for (engine, version), rows in groups.items():
        full = [r for r in rows if r.full_figures]
        entry = {
            "records": len(rows),
            "full_figure_records": len(full),
            "weights_mape": mape([r.weights_error for r in rows if r.weights_error is not None]),
            "weights_max_abs_error": max((abs(r.weights_error) for r in rows if r.weights_error is not None), default=None),
            "kv_tokens_mape": mape([r.kv_tokens_error for r in full if r.kv_tokens_error is not None]),
            "kv_gib_mape": mape([r.kv_gib_error for r in full if r.kv_gib_error is not None and r.logged_kv_gib > 0]),
            "fraction_max_abs_error": max((abs(r.predicted_fraction - r.logged_fraction) for r in rows
                                           if r.predicted_fraction is not None and r.logged_fraction is not None),
                                          default=None),
            "failed_starts": sum(r.logged_failed for r in rows),
            "failed_starts_predicted_not_fitting": sum(r.logged_failed and r.predicted_fits is False for r in rows),
        }
        (out["by_engine"] if version == "*" else out["by_version"])[f"{engine} {version}".strip(" *")] = entry
    return out
