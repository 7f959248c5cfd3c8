"""Optimisation levels: what each one turns down, as data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional


class Level(str, Enum):
    none = "none"
    basic = "basic"
    aggressive = "aggressive"
    extreme = "extreme"
    flash = "flash"

    @property
    def rank(self) -> int:
        return list(Level).index(self)


# Least to most aggressive; `auto` walks this list and takes the first that fits.
MODEL_LEVELS: tuple[Level, ...] = (Level.none, Level.basic, Level.aggressive, Level.extreme)


class Quant(str, Enum):
    """How weights are stored on the device."""

    none = "none"  # the compute dtype (bf16/fp16/fp32)
    int8 = "int8"  # bitsandbytes LLM.int8 (built-in engine)
    fp8 = "fp8"    # fp8 weights (SGLang/vLLM)
    nf4 = "nf4"    # bitsandbytes 4-bit NF4


@dataclass(frozen=True)
class LevelKnobs:
    """What a level asks for before the engine and the budget have their say.

    None means "the engine's own default" (only the `none` level uses that).
    """

    weight_bits: int                 # 16 (compute dtype), 8 or 4
    kv_fp8: bool                     # fp8 KV cache where the engine and GPU support it
    max_model_len: Optional[int]     # None: the model's full context
    batch_divisor: int               # batch = concurrency // divisor (at least 1)
    batch_max: Optional[int]         # hard cap on the batch (extreme: 1)
    chunk_tokens: Optional[int]      # prefill chunk for SGLang/vLLM; None: engine default
    cuda_graphs: bool
    shrink_to_fit: bool              # may lower the batch until the plan fits
    sized_kv: bool                   # KV pinned to the workload instead of filling the pool


LEVEL_KNOBS: dict[Level, LevelKnobs] = {
    Level.none: LevelKnobs(16, False, None, 1, None, None, True, False, False),
    Level.basic: LevelKnobs(16, False, 8192, 1, None, 4096, True, True, True),
    Level.aggressive: LevelKnobs(8, True, 4096, 2, None, 2048, True, True, True),
    Level.extreme: LevelKnobs(4, True, 2048, 1, 1, 2048, False, True, True),
}

LEVEL_INTENT: dict[Level, str] = {
    Level.none: "engine defaults, unquantized, full context",
    Level.basic: "16-bit, KV and batch sized to the workload, context 8192",
    Level.aggressive: "8-bit weights, fp8 KV where supported, half batch, context 4096",
    Level.extreme: "4-bit weights, batch 1, context 2048, no CUDA graphs, smaller crops",
    Level.flash: "no model: text-layer extraction only (0 GB VRAM)",
}
