"""One sample before decoding (`Record`), and the checked decoders for its image and caption bytes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipforge.data.errors import BAD_ENCODING, CORRUPT_IMAGE, EMPTY_CAPTION, MISSING_FILE, SkipSample
from clipforge.decode import ImageError, decode_rgb, exif_orientation

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Record:
    """An image (path on disk or encoded bytes) with a caption and/or an integer label; `key` names it in logs."""

    image: Path | bytes
    caption: str | bytes | None = None
    label: int | None = None
    key: str = ""


def read_image_bytes(image: Path | bytes, key: str = "") -> bytes:
    if isinstance(image, bytes):
        return image
    where = f"{key}: {image}" if key else str(image)
    try:
        return Path(image).read_bytes()
    except FileNotFoundError as e:
        raise SkipSample(MISSING_FILE, where) from e
    except OSError as e:
        raise SkipSample(MISSING_FILE, f"{where}: {e}") from e


def _decode_jpeg_fast(data: bytes) -> np.ndarray | None:
    """torchvision's C++ JPEG decoder (~3x PIL on small images); None when unavailable or it refuses the data."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chw = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:
        return None  # PIL gets the final word (and the error message)
    return chw.permute(1, 2, 0).contiguous().numpy()


def decode_image(image: Path | bytes, key: str = "") -> np.ndarray:
    """Encoded image -> (H, W, 3) uint8 RGB, decoded as `clipforge.decode.decode_rgb` does (EXIF orientation
    applied, 16-bit scaled); unreadable, truncated or oversized files raise `SkipSample`."""
    data = read_image_bytes(image, key)
    if data[:3] == b"\xff\xd8\xff" and exif_orientation(data) == 1:
        fast = _decode_jpeg_fast(data)
        if fast is not None:
            return fast
    try:
        return np.asarray(decode_rgb(data), dtype=np.uint8)
    except ImageError as e:
        raise SkipSample(
            CORRUPT_IMAGE, f"{key or image if not isinstance(image, bytes) else key}: {e}"
        ) from e


def decode_caption(caption: str | bytes | None, key: str = "") -> str:
    """Caption bytes/str -> stripped str; empty or non-UTF-8 captions raise `SkipSample`."""
    if caption is None:
        raise SkipSample(EMPTY_CAPTION, key)
    if isinstance(caption, bytes):
        try:
            caption = caption.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SkipSample(BAD_ENCODING, key) from e
    text = caption.replace("\x00", "").strip()
    if not text:
        raise SkipSample(EMPTY_CAPTION, key)
    return text
