"""Inputs for the apps: image paths from files / folders / globs, label lists, safe image decoding."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Largest image we will decode (pixels). PIL's own guard warns at this and raises at twice it.
MAX_IMAGE_PIXELS = 40_000_000


class ImageError(ValueError):
    """An input image could not be used (unreadable, wrong type, too large)."""


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def collect_images(specs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files, folders (recursive) and glob patterns -> sorted unique image paths.

    A spec that matches nothing raises FileNotFoundError naming it; folders contribute only files with
    an image extension, explicitly named files are taken as they are."""
    found: dict[Path, None] = {}
    for spec in specs:
        spec = os.fspath(spec)
        path = Path(spec)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and is_image_path(p):
                    found[p] = None
        elif path.is_file():
            found[path] = None
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if m.is_file() and is_image_path(m)]
            if not files:
                raise FileNotFoundError(f"glob {spec!r} matched no image files")
            found.update(dict.fromkeys(files))
        else:
            raise FileNotFoundError(f"image input {spec!r}: no such file, folder or glob match")
    return list(found)


def parse_labels(spec: str) -> list[str]:
    """`"cat,dog"` or a path to a text file with one label per line (blank lines and #comments skipped)."""
    path = Path(spec)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        labels = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        source = str(path)
    else:
        labels = [part.strip() for part in spec.split(",") if part.strip()]
        source = "--labels"
    if not labels:
        raise ValueError(f"{source}: no labels found (give 'cat,dog' or a file with one label per line)")
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(f"{source}: duplicate labels {duplicates}")
    return labels


def parse_templates(spec: str | None) -> list[str]:
    """None -> ['a photo of a {}.']; else a file of templates (one per line) or '|'-separated templates."""
    if not spec:
        return ["a photo of a {}."]
    path = Path(spec)
    if path.is_file():
        items = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        source = str(path)
    else:
        items = [t.strip() for t in spec.split("|") if t.strip()]
        source = "--templates"
    bad = [t for t in items if "{}" not in t]
    if bad or not items:
        raise ValueError(f"{source}: every template needs a '{{}}' for the label, got {bad or items}")
    return items


def open_image(source, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image (path or file object) to RGB, refusing decompression bombs before decoding.

    The header gives the size without decoding pixels; anything above `max_pixels` is rejected, and
    PIL's own bomb check is turned into an error rather than a warning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image is {width}x{height} = {width * height} pixels, above the limit {max_pixels}"
                )
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"image refused as a decompression bomb: {err}") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot decode image: {err}") from err
