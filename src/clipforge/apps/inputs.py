"""Inputs for the apps: image paths from files / folders / globs, label and template lists.

Images are decoded by `clipforge.decode.open_image` (re-exported here with its `ImageError`)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from clipforge.decode import ImageError, open_image

__all__ = ["ImageError", "collect_images", "is_image_path", "open_image", "parse_labels", "parse_templates"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def collect_images(specs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files, folders (recursive) and glob patterns -> sorted unique image paths.

    A spec that matches nothing raises FileNotFoundError naming it; folders contribute only files with
    an image extension, explicitly named files are taken as they are."""
    found: dict[Path, None] = {}
    for spec in specs:
        spec = os.path.expanduser(os.fspath(spec))
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
    path = Path(spec).expanduser()
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
    path = Path(spec).expanduser()
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
