"""The MinerU two-step workload: how one context splits into image, prompt and output tokens.

Every engine caps *every* image at one pixel cap — SGLang's SGLANG_IMAGE_MAX_PIXELS, vLLM's
max_pixels, the built-in engine's --max-image-pixels — the 1036×1036 layout page included. So the
cap is kept at the layout page's size whenever the context leaves the minimum output beside it;
below that length the layout page shrinks with the context (and the warning says so), down to
the processor's smallest image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from mineru_fit.errors import PlanInputError
from mineru_fit.models.spec import ModelSpec
from mineru_fit.planner import constants as C
from mineru_fit.planner.terms import image_tokens


@dataclass(frozen=True)
class ContextSplit:
    """Every request of the two steps fits: image tokens + prompt + output <= max_model_len."""

    max_model_len: int
    layout_image_tokens: int   # the layout page as the engine will see it (1369 for 1036×1036)
    content_image_tokens: int  # the pixel cap, in tokens: the largest image of either step
    max_image_pixels: int      # the pixel cap that gives content_image_tokens
    max_new_tokens: int        # the output cap every request can afford
    layout_side_px: int = C.LAYOUT_IMAGE_SIDE_PX       # side of the layout page the engine sees
    full_layout_side_px: int = C.LAYOUT_IMAGE_SIDE_PX  # what a long enough context would give

    @property
    def max_image_tokens(self) -> int:
        return max(self.layout_image_tokens, self.content_image_tokens)

    @property
    def layout_shrunk(self) -> bool:
        """The context, not the processor, makes the layout page smaller than MinerU's."""
        return self.layout_side_px < self.full_layout_side_px

    def degradation(self) -> Optional[str]:
        """One line on what this context gives up, or None when MinerU's layout page fits whole."""
        if not self.layout_shrunk:
            return None
        side, full = self.layout_side_px, self.full_layout_side_px
        return (
            f"context {self.max_model_len} shrinks MinerU's layout page to {side}×{side} px (from {full}×{full}) "
            f"and caps every answer at {self.max_new_tokens} tokens: a longer table or text block is cut off"
        )


def layout_image_tokens(spec: ModelSpec) -> int:
    return image_tokens(C.LAYOUT_IMAGE_SIDE_PX * C.LAYOUT_IMAGE_SIDE_PX, spec)


def _token_side_px(spec: ModelSpec) -> int:
    return math.isqrt(spec.vision.pixels_per_token)  # 28 px per token side for MinerU2.5


def _smallest_image_tokens(spec: ModelSpec) -> int:
    return max(1, spec.image.min_pixels // spec.vision.pixels_per_token)


def full_layout_tokens(spec: ModelSpec) -> int:
    """The layout page's tokens when the context is long: 1036×1036, or less if the processor caps it."""
    return min(layout_image_tokens(spec), spec.image.max_pixels // spec.vision.pixels_per_token)


def full_layout_model_len(spec: ModelSpec) -> int:
    """The shortest context that still reads the layout page whole (1657 for MinerU2.5)."""
    return full_layout_tokens(spec) + C.PROMPT_TOKENS + C.MIN_OUTPUT_TOKENS


def min_model_len(spec: ModelSpec) -> int:
    """The shortest context one MinerU request can use at all: the processor's smallest image,
    the prompt and the minimum output."""
    return _smallest_image_tokens(spec) + C.PROMPT_TOKENS + C.MIN_OUTPUT_TOKENS


def split_context(spec: ModelSpec, max_model_len: int) -> ContextSplit:
    """Lower the pixel cap and the output cap together when the context is short."""
    shortest = min_model_len(spec)
    if max_model_len < shortest:
        raise PlanInputError(
            f"--max-model-len {max_model_len} is shorter than one MinerU request ({_smallest_image_tokens(spec)} "
            f"image tokens at the smallest image + {C.PROMPT_TOKENS} prompt + {C.MIN_OUTPUT_TOKENS} output) "
            f"— use at least {shortest}"
        )
    per_token = spec.vision.pixels_per_token
    room = max_model_len - C.PROMPT_TOKENS
    full_layout = full_layout_tokens(spec)
    # Content crops may take half the room and the layout page keeps its size, as long as the
    # minimum output still fits beside them; below that, images get what the minimum output leaves.
    cap = min(room - C.MIN_OUTPUT_TOKENS, max(int(room * C.CONTENT_IMAGE_SHARE), full_layout))
    cap = max(_smallest_image_tokens(spec), min(spec.image.max_pixels // per_token, cap))
    side_px = _token_side_px(spec)
    full_side = math.isqrt(full_layout)
    side = min(full_side, math.isqrt(cap))  # the engine's resize keeps sides on the 28 px grid
    return ContextSplit(
        max_model_len=max_model_len,
        layout_image_tokens=side * side,
        content_image_tokens=cap,
        max_image_pixels=cap * per_token,
        max_new_tokens=room - cap,
        layout_side_px=side * side_px,
        full_layout_side_px=full_side * side_px,
    )
