"""The one way encoded images enter clipforge: a file, bytes or file object -> a decoded PIL image.

`open_image` checks the header against `ImageLimits` before any pixel is decoded (pixel count, aspect ratio,
format), decodes, and applies the EXIF orientation (phone photos stand upright), but keeps the image in its
own mode: the exact transform (`clipforge.transforms.Preprocess`) then resizes it as OpenAI and open_clip do
and converts to RGB last, so RGBA, palette, 16-bit and CMYK images come out as `Preprocess` defines them.
`decode_rgb` is the same image converted to RGB (16-bit scaled, not clipped) for code that stores pixels:
thumbnails, curated JPEGs, uint8 training arrays.

Every app, evaluation dataset, curation step and data reader decodes through here. No global state is
touched: PIL's process-wide `Image.MAX_IMAGE_PIXELS` is left as it is (images above twice it are refused by
PIL itself, which `open_image` reports as an `ImageError`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | IO[bytes]

# Modes the exact transform can turn into RGB; LAB and HSV need a colour profile PIL does not apply.
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F"}
    | {"I;16", "I;16L", "I;16B", "I;16N"}
)


class ImageError(ValueError):
    """An input image could not be used; the message says why and `reason` classifies it:
    'missing', 'unreadable', 'format' (type not allowed), 'mode' (no RGB conversion), 'too_large'."""

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageLimits:
    """What `open_image` accepts, checked from the header before decoding.

    max_pixels: width * height; max_aspect_ratio: longer side / shorter side (a 1 x 300,000 strip would
    become a 224 x 67,200,000 image in the shorter-side resize); formats: PIL format names, None for any."""

    max_pixels: int = 40_000_000
    max_aspect_ratio: float | None = 40.0
    formats: tuple[str, ...] | None = None

    def check(self, image: Image.Image, name: str) -> None:
        width, height = image.size
        if self.formats is not None and image.format not in self.formats:
            allowed = ", ".join(self.formats)
            raise ImageError(f"{name}: image type {image.format} not allowed; use one of {allowed}", "format")
        if width < 1 or height < 1:
            raise ImageError(f"{name}: image is {width}x{height}, has no pixels", "unreadable")
        if width * height > self.max_pixels:
            raise ImageError(
                f"{name}: image is {width}x{height} = {width * height:,} pixels, above the limit "
                f"{self.max_pixels:,}",
                "too_large",
            )
        ratio = max(width, height) / min(width, height)
        if self.max_aspect_ratio is not None and ratio > self.max_aspect_ratio:
            raise ImageError(
                f"{name}: image is {width}x{height}, aspect ratio {ratio:.0f}:1 above the limit "
                f"{self.max_aspect_ratio:g}:1",
                "too_large",
            )
        if image.mode not in SUPPORTED_MODES:
            raise ImageError(f"{name}: PIL mode {image.mode!r} has no RGB conversion; save it as RGB", "mode")


DEFAULT_LIMITS = ImageLimits()


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "image bytes" if isinstance(source, bytes) else "uploaded image"


def open_image(
    source: ImageSource, limits: ImageLimits = DEFAULT_LIMITS, draft_size: int | None = None
) -> Image.Image:
    """Decode one image: limits checked from the header, EXIF orientation applied, mode kept.

    draft_size: for a JPEG, let libjpeg decode at 1/2, 1/4 or 1/8 scale while both sides stay >= it (a
    2-4x faster decode whose pixels differ slightly from a full decode; see docs/transforms.md). Raises
    ImageError naming the source for anything unreadable or outside `limits`."""
    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        source = Path(source).expanduser()
    elif isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as image:
            limits.check(image, name)
            if draft_size and image.format == "JPEG":
                image.draft(image.mode, (draft_size, draft_size))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return image
    except ImageError:
        raise
    except FileNotFoundError as error:
        raise ImageError(f"{name}: no such file", "missing") from error
    except Image.DecompressionBombError as error:
        raise ImageError(
            f"{name}: refused by PIL's decompression-bomb limit ({error})", "too_large"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"{name}: cannot decode image ({error})") from error


def decode_rgb(
    source: ImageSource, limits: ImageLimits = DEFAULT_LIMITS, draft_size: int | None = None
) -> Image.Image:
    """`open_image`, then RGB the way the exact transform converts (16-bit scaled, alpha dropped)."""
    return to_rgb(open_image(source, limits, draft_size))


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
CONVERT_BEFORE_RESIZE = {"P": "RGB", "PA": "RGBA", "1": "L", "La": "LA"}


def sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """16-bit grey (I;16*, or I with values above 255) -> 8-bit L, scaling 0..65535 to 0..255 with rounding."""
    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def to_resizable(image: Image.Image) -> Image.Image:
    """The image in a mode whose pixel values PIL can interpolate; unchanged for the common modes."""
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.getextrema()[1] > 255):
        return sixteen_bit_to_l(image)
    target = CONVERT_BEFORE_RESIZE.get(image.mode)
    return image.convert(target) if target else image


def convert_rgb(image: Image.Image) -> Image.Image:
    """PIL's RGB conversion (alpha dropped, as OpenAI's `_convert_image_to_rgb`), with a clear error."""
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ValueError(f"cannot convert a PIL image of mode {image.mode!r} to RGB: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, scaling 16-bit images instead of clipping them."""
    return convert_rgb(to_resizable(image))


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8; 1 = upright) from the header only, for decoders that skip PIL."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(0x0112, 1))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 1
