"""PNG, JPEG and WebP files as one-page documents; their size is checked before any pixel is decoded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mineru_fit.errors import InputDocumentError
from mineru_fit.parsing.providers.pdf import MAX_RENDER_PIXELS

# The built-in engine's own input limit (16384²): a larger image is refused, not decoded.
MAX_INPUT_PIXELS = 16384 * 16384


def _pil() -> Any:
    """PIL, imported on first use: the base install (plan, doctor, --help) has no pillow."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise InputDocumentError("reading images needs pillow — pip install 'mineru-fit[flash]'") from exc
    # PIL's bomb guard raises at open() without saying how large the image is; this module
    # checks every size itself before decoding (the engine's images.py does the same).
    Image.MAX_IMAGE_PIXELS = None
    return Image


class ImageDocument:
    """One image = one page. `render` ignores the DPI: the pixels are what they are."""

    kind = "image"
    page_count = 1
    encrypted = False

    def __init__(self, path: Path) -> None:
        self.path = path
        Image = _pil()
        try:
            with Image.open(path) as image:
                self.size = image.size
                self.format = image.format
        except (OSError, ValueError) as exc:
            raise InputDocumentError(f"{path} is not an image PIL can read ({exc}) — re-save it as PNG or JPEG") from exc
        width, height = self.size
        if width * height > MAX_INPUT_PIXELS:
            raise InputDocumentError(
                f"{path} is {width}×{height} ({width * height / 1e6:.1f} MP); the limit is "
                f"{MAX_INPUT_PIXELS / 1e6:.1f} MP — downscale it first"
            )
        if width < 1 or height < 1:
            raise InputDocumentError(f"{path} has no pixels ({width}×{height})")

    def close(self) -> None:
        pass

    def __enter__(self) -> "ImageDocument":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def text_layer(self, index: int) -> str:
        return "image_only"

    def render(self, index: int, dpi: int) -> Any:
        Image = _pil()
        try:
            with Image.open(self.path) as image:
                image.load()
                rgb = image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise InputDocumentError(f"{self.path} is truncated or corrupt ({exc}) — re-save it") from exc
        width, height = rgb.size
        if width * height > MAX_RENDER_PIXELS:
            scale = math.sqrt(MAX_RENDER_PIXELS / (width * height))
            rgb = rgb.resize((max(1, int(width * scale)), max(1, int(height * scale))), Image.Resampling.LANCZOS)
        return rgb

    def source_for_flash(self) -> Path:
        return self.path
