"""Images from request content: data: URLs (remote URLs only when allowed), checked before decoding."""

from __future__ import annotations

import base64
import binascii
import io
import math
import re

from PIL import Image

from mineru_fit.engines.builtin.limits import RequestRefused

_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]*)?(?P<params>(;[\w=.-]+)*?)(;base64)?,(?P<data>.*)$", re.DOTALL)
# PIL's own guard raises at open() for large images, before we can say how large; this module
# checks every image's size itself (max_input_pixels) before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None
REMOTE_TIMEOUT_S = 10.0


def decode_image(url: str, *, max_input_pixels: int, allow_remote: bool, max_encoded_bytes: int,
                 max_pixels: int) -> Image.Image:
    """An RGB image of at most `max_pixels` (fit_pixels) from a data: URL (or http(s) when allowed); 4xx
    RequestRefused otherwise. Its size is read from the header and refused past `max_input_pixels`
    before any pixel is decoded."""
    if url.startswith(("http://", "https://")):
        if not allow_remote:
            raise RequestRefused(
                400,
                "remote image URLs are disabled on this server — send the image as a data: URL "
                "(base64), or start the server with --allow-remote-images",
                param="messages",
            )
        raw = _fetch(url, max_encoded_bytes)
    else:
        raw = _data_url_bytes(url, max_encoded_bytes)
    return _open(raw, max_input_pixels, max_pixels)


def _data_url_bytes(url: str, max_encoded_bytes: int) -> bytes:
    if len(url) > max_encoded_bytes:
        raise RequestRefused(413, f"the image is over {max_encoded_bytes / 2**20:.1f} MiB of base64 — send a smaller one",
                             kind="RequestTooLarge", param="messages")
    match = _DATA_URL.match(url)
    if not match:
        raise RequestRefused(400, "an image_url must be a data: URL such as data:image/png;base64,... ", param="messages")
    try:
        return base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestRefused(400, f"the image's base64 data is corrupt ({exc}) — re-encode it", param="messages") from exc


def _fetch(url: str, max_bytes: int) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, timeout=REMOTE_TIMEOUT_S, follow_redirects=True) as response:
            response.raise_for_status()
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise RequestRefused(413, "the remote image is too large", kind="RequestTooLarge")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise RequestRefused(400, f"could not fetch the image from {url}: {exc}", param="messages") from exc
    return b"".join(chunks)


# Modes whose resize commutes with conversion to RGB: shrinking first saves a full-size RGB copy.
_SHRINK_FIRST = ("RGB", "L")


def _open(raw: bytes, max_input_pixels: int, max_pixels: int) -> Image.Image:
    if not raw:
        raise RequestRefused(400, "the image is empty (0 bytes)", param="messages")
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
    except (OSError, ValueError) as exc:
        # PIL's own message names a BytesIO object's address: of no use to the client.
        raise RequestRefused(400, "the data is not an image PIL can read — send a PNG or JPEG", param="messages") from exc
    if width * height > max_input_pixels:
        raise RequestRefused(
            413,
            f"the image is {width}×{height} ({width * height / 1e6:.1f} MP); this server accepts up to "
            f"{max_input_pixels / 1e6:.1f} MP — downscale it first",
            kind="RequestTooLarge",
            param="messages",
        )
    try:
        image.load()
    except (OSError, ValueError) as exc:
        raise RequestRefused(400, f"the image is truncated or corrupt ({exc})", param="messages") from exc
    if image.mode in _SHRINK_FIRST:
        image = fit_pixels(image, max_pixels)
        return image if image.mode == "RGB" else image.convert("RGB")
    return fit_pixels(image.convert("RGB"), max_pixels)


def fit_pixels(image: Image.Image, max_pixels: int, factor: int = 28) -> Image.Image:
    """Downscale (never up) so the image has at most `max_pixels` once sides round to `factor`."""
    width, height = image.size
    if width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    new_w = max(factor, math.floor(width * scale / factor + 1e-9) * factor)
    new_h = max(factor, math.floor(height * scale / factor + 1e-9) * factor)
    return image.resize((new_w, new_h), Image.Resampling.BICUBIC)
