"""What one request may ask of the built-in engine: the plan's rules, pure.

Every number a client can push past the plan is checked here, before the engine spends memory
on it: a refusal is a 4xx with one line that says what to change. Each limit says why it
follows from the plan (or, for sampling values, from the rule vLLM applies to the same field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mineru_fit.planner.constants import IMAGES_PER_REQUEST, MAX_PAGE_PIXELS

# --- sampling values (vLLM's rules, so a client written for vLLM behaves the same) -----------
# `seed` is a C long in vLLM (torch.iinfo(torch.long)); torch.manual_seed overflows past it.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
# repetition_penalty divides positive logits and multiplies negative ones. vLLM asks only for a
# finite value > 0, but 1e-300 is 0.0 in float32 and turns the logits into inf (sampling then
# fails). Within [1/100, 100] a logit under 655 in magnitude stays finite even in float16.
REPETITION_PENALTY_MIN, REPETITION_PENALTY_MAX = 0.01, 100.0
# A temperature below this samples greedily, as in vLLM (_SAMPLING_EPS): dividing the logits by
# 1e-300 makes them inf and sampling fails.
GREEDY_BELOW_TEMPERATURE = 1e-5
# top_k: -1 and 0 disable it (vLLM); above the vocabulary it keeps every token. Capped at int32
# so that it is a valid tensor index in any kernel.
TOP_K_MIN, TOP_K_MAX = -1, 2**31 - 1

# --- the request's shape -------------------------------------------------------------------
# MinerU's and the openai client's bodies nest 5 levels; Python's JSON parser recurses once per
# level, and past ~1000 levels it fails (a 500 that took the connection down).
MAX_JSON_DEPTH = 64
# A parsed JSON value is ~30× its text (a dict or model instance for 16 bytes of `{"type":"text"}`),
# so a body is also limited in how many values it holds: a chat turn is ~8 (role, content, a part's
# type, text, image_url, url); vendor extras and sampling fields get 1024 more.
JSON_VALUES_PER_MESSAGE = 8
JSON_VALUES_BESIDE_MESSAGES = 1024
# OpenAI's API takes up to 4 stop sequences (MinerU sends none). Each decode step decodes a tail of
# 4 tokens per character of the longest stop for every row that has stops (generation.py), and the
# answer is searched for each: cost per step grows with their length. (Before the engine ran its
# own decode loop, transformers' stop-string table — vocabulary × stop length, 8 kept cached — made
# a 400 KB stop cost ~0.8 GB; 32 characters in all is still plenty for real stop sequences.)
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 32
# No token of a byte-level BPE vocabulary spans more than a few dozen characters of ordinary
# text, so a prompt of more than this many characters per context token cannot fit the context:
# it is refused before the tokenizer spends memory and time on it.
MAX_PROMPT_CHARS_PER_TOKEN = 16
# Every chat turn costs at least its template's markers (<|im_start|>role ... <|im_end|>).
MIN_TOKENS_PER_MESSAGE = 4
# An input image is shrunk to the plan's max_image_pixels before the model sees it. Decoding
# costs its full size first (DECODE_BYTES_PER_PIXEL), which the plan does not count; a client may
# send up to 5× the planned side (25× the pixels: 40 MP for a 1.6 MP cap), or the largest page
# the parse side renders (MAX_PAGE_PIXELS) if that is more, not more: a decode then holds at
# most ~0.3 GB (DECODE_BYTES_PER_PIXEL) where a 16000×16000 PNG alone held 1 GB.
MAX_INPUT_DOWNSCALE = 5
# A compressed image is at most its raw size: 16-bit RGBA is 8 bytes a pixel; base64 adds 4/3.
MAX_ENCODED_BYTES_PER_PIXEL = 8
# ... and never more than this much base64 (a 40 MP page is 5-30 MB as PNG or JPEG).
MAX_ENCODED_IMAGE_BYTES = 64 * 1024 * 1024
# JSON framing, roles, sampling fields: what a body holds besides its text and images.
BODY_OVERHEAD_BYTES = 64 * 1024
# Images decoded at once (each at most max_input_pixels): decoding runs in threads, and without
# a bound 40 requests decoding at once would each hold a full-size image. One at a time: a
# MinerU crop decodes in milliseconds, far faster than the model answers it.
DECODE_SLOTS = 1
# What one decode holds at its peak, per input pixel: the decoded image (PIL keeps RGB in 4 bytes),
# its RGB conversion (4) and the resize's intermediate rows; RGB and greyscale images are shrunk
# before conversion. Measured in the engine (tests/adversarial/test_engine_requests.py, CPU box,
# 2026-12-01): 5.2 bytes a pixel for 36 MP palette PNGs, the costliest kind.
DECODE_BYTES_PER_PIXEL = 8
# Requests holding a body, decoded images or encoded tensors at once, per request in a batch:
# one batch running and one being prepared. The rest wait holding only their body.
ADMITTED_PER_BATCH_SLOT = 2


class RequestRefused(Exception):
    """A request that cannot be served as sent; carries the HTTP status and a clear message."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError", param: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param


@dataclass(frozen=True)
class RequestLimits:
    """Per-request limits derived from the plan's numbers (max_model_len, max_image_pixels, batch)."""

    max_images: int
    max_input_pixels: int       # per image, from its header, before any pixel is decoded
    max_prompt_chars: int       # all text parts together, before tokenizing
    max_messages: int
    max_json_values: int
    max_encoded_image_bytes: int
    max_body_bytes: int
    max_admitted: int           # requests decoding, encoded or generating at once (the rest hold only a body)
    max_ngram_size: int

    @classmethod
    def from_plan(cls, *, max_model_len: int, max_image_pixels: int, max_batch_size: int,
                  max_input_pixels: Optional[int] = None) -> "RequestLimits":
        """`max_input_pixels` (BuiltinOptions, when set) overrides the derived cap on a decoded image."""
        input_pixels = max_input_pixels or max(max_image_pixels * MAX_INPUT_DOWNSCALE**2, MAX_PAGE_PIXELS)
        encoded = min(MAX_ENCODED_IMAGE_BYTES, input_pixels * MAX_ENCODED_BYTES_PER_PIXEL * 4 // 3)
        prompt_chars = max_model_len * MAX_PROMPT_CHARS_PER_TOKEN
        # JSON escapes a character in at most 6 bytes (\uXXXX).
        body = IMAGES_PER_REQUEST * encoded + 6 * (prompt_chars + MAX_STOP_STRINGS * MAX_STOP_CHARS) + BODY_OVERHEAD_BYTES
        messages = max(1, max_model_len // MIN_TOKENS_PER_MESSAGE)
        return cls(
            max_images=IMAGES_PER_REQUEST,
            max_input_pixels=input_pixels,
            max_prompt_chars=prompt_chars,
            max_messages=messages,
            max_json_values=messages * JSON_VALUES_PER_MESSAGE + JSON_VALUES_BESIDE_MESSAGES,
            max_encoded_image_bytes=encoded,
            max_body_bytes=body,
            max_admitted=max(1, max_batch_size) * ADMITTED_PER_BATCH_SLOT,
            max_ngram_size=max_model_len,
        )


@dataclass(frozen=True)
class TokenBudget:
    max_model_len: int
    default_new_tokens: int  # the plan's output cap: what a request without max_tokens gets

    def new_tokens_for(self, prompt_tokens: int, requested: Optional[int]) -> int:
        """Clamp so prompt + output never exceed the context; never 'the rest of the context'."""
        if requested is not None and requested >= self.max_model_len:
            raise RequestRefused(
                400,
                f"max_tokens {requested} does not fit this server's context of {self.max_model_len} tokens "
                f"(--max-model-len) — ask for fewer, at most {self.max_model_len - prompt_tokens}",
                param="max_tokens",
            )
        room = self.max_model_len - prompt_tokens
        if room < 1:
            raise RequestRefused(
                400,
                f"the prompt is {prompt_tokens} tokens (image included) but the context is "
                f"{self.max_model_len} — send a smaller image or start the server with a longer --max-model-len",
                param="messages",
            )
        wanted = requested if requested is not None else self.default_new_tokens
        return max(1, min(wanted, room))
