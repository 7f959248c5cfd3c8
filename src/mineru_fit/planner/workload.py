"""The MinerU two-step workload: how one context splits into image, prompt and output tokens."""

from __future__ import annotations

from dataclasses import dataclass

from mineru_fit.errors import PlanInputError
from mineru_fit.models.spec import ModelSpec
from mineru_fit.planner import constants as C
from mineru_fit.planner.terms import image_tokens


@dataclass(frozen=True)
class ContextSplit:
    """Every request of the two steps fits: image tokens + prompt + output <= max_model_len."""

    max_model_len: int
    layout_image_tokens: int   # the 1036×1036 layout page
    content_image_tokens: int  # the largest content crop
    max_image_pixels: int      # the pixel cap that gives content_image_tokens
    max_new_tokens: int        # the output cap every request can afford

    @property
    def max_image_tokens(self) -> int:
        return max(self.layout_image_tokens, self.content_image_tokens)


def layout_image_tokens(spec: ModelSpec) -> int:
    return image_tokens(C.LAYOUT_IMAGE_SIDE_PX * C.LAYOUT_IMAGE_SIDE_PX, spec)


def min_model_len(spec: ModelSpec) -> int:
    """The shortest context MinerU's layout step can work in."""
    return layout_image_tokens(spec) + C.PROMPT_TOKENS + C.MIN_OUTPUT_TOKENS


def split_context(spec: ModelSpec, max_model_len: int) -> ContextSplit:
    """Lower the crop pixel cap and the output cap together when the context is short."""
    shortest = min_model_len(spec)
    if max_model_len < shortest:
        raise PlanInputError(
            f"--max-model-len {max_model_len} is too short for MinerU's layout step "
            f"({layout_image_tokens(spec)} image tokens + {C.PROMPT_TOKENS} prompt + "
            f"{C.MIN_OUTPUT_TOKENS} output) — use at least {shortest}"
        )
    per_token = spec.vision.pixels_per_token
    room = max_model_len - C.PROMPT_TOKENS
    content = min(spec.image.max_pixels // per_token, int(room * C.CONTENT_IMAGE_SHARE))
    content = max(content, max(1, spec.image.min_pixels // per_token))
    layout = layout_image_tokens(spec)
    return ContextSplit(
        max_model_len=max_model_len,
        layout_image_tokens=layout,
        content_image_tokens=content,
        max_image_pixels=content * per_token,
        max_new_tokens=room - max(layout, content),
    )
