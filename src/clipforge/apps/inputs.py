"""Inputs for the apps: image paths from files / folders / globs, label and template lists.

Labels and templates are validated here for every surface (the CLI and the service call the same
functions): at least two labels (one label always scores 1.0, so it is refused everywhere), no two labels
that are the same text to the model (the tokenizer lower-cases and collapses spaces, so 'Cat' and 'cat'
are one class split in two), every template with a '{}'. Images are decoded by
`clipforge.decode.open_image` (re-exported here with its `ImageError`).
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from clipforge.decode import ImageError, open_image
from clipforge.fileio import read_text

__all__ = [
    "ImageError",
    "collect_images",
    "is_image_path",
    "open_image",
    "parse_labels",
    "parse_templates",
    "validate_labels",
    "validate_templates",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _is_file(spec: str) -> bool:
    """Path(spec).is_file() for any string: a long label list or one with a NUL byte is not a path."""
    try:
        return Path(spec).expanduser().is_file()
    except (OSError, ValueError):
        return False


def _is_dir(spec: str) -> bool:
    try:
        return Path(spec).is_dir()
    except (OSError, ValueError):
        return False


def collect_images(specs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files, folders (recursive) and glob patterns -> sorted unique image paths.

    A spec that matches nothing raises FileNotFoundError naming it; folders contribute only files with
    an image extension, explicitly named files are taken as they are. No image at all is a ValueError
    saying what the folders held instead (e.g. only .heic files)."""
    found: dict[Path, None] = {}
    others: Counter[str] = Counter()
    for spec in specs:
        spec = os.path.expanduser(os.fspath(spec))
        path = Path(spec)
        if _is_dir(spec):
            for p in sorted(path.rglob("*")):
                if p.is_file():
                    if is_image_path(p):
                        found[p] = None
                    else:
                        others[p.suffix.lower() or "(no extension)"] += 1
        elif _is_file(spec):
            found[path] = None
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if m.is_file() and is_image_path(m)]
            if not files:
                raise FileNotFoundError(f"glob {spec!r} matched no image files")
            found.update(dict.fromkeys(files))
        else:
            raise FileNotFoundError(f"image input {spec!r}: no such file, folder or glob match")
    if not found:
        held = ", ".join(f"{n} {ext}" for ext, n in others.most_common(5)) or "no files"
        supported = " ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(
            f"no image files in {', '.join(map(str, specs))} ({held}); readable types: {supported}"
        )
    return list(found)


def _lines(path: Path, what: str) -> list[str]:
    lines = read_text(path, what).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def same_to_the_model(text: str) -> str:
    """The form the tokenizer sees: lower-cased, runs of white space collapsed (see tokenizer.clean)."""
    return " ".join(text.split()).lower()


def validate_labels(
    labels: Sequence[str], source: str = "labels", max_labels: int | None = None
) -> list[str]:
    """The labels as given, or a ValueError naming `source` and what would be valid."""
    labels = [label.strip() for label in labels if label.strip()]
    if not labels:
        raise ValueError(f"{source}: no labels found (give 'cat,dog' or a file with one label per line)")
    if len(labels) == 1:
        raise ValueError(
            f"{source}: one label ({labels[0]!r}) always scores 1.0, because zero-shot classification "
            f"compares labels; give at least two, e.g. '{labels[0]},something else'"
        )
    if max_labels is not None and len(labels) > max_labels:
        raise ValueError(f"{source}: {len(labels)} labels, at most {max_labels} allowed")
    duplicates = sorted(label for label, n in Counter(labels).items() if n > 1)
    if duplicates:
        raise ValueError(f"{source}: duplicate labels {duplicates[:5]}; give each label once")
    seen: dict[str, str] = {}
    for label in labels:
        key = same_to_the_model(label)
        if key in seen:
            raise ValueError(
                f"{source}: labels {seen[key]!r} and {label!r} differ only in case or spacing, so they are "
                "the same text to the model; keep one"
            )
        seen[key] = label
    return labels


def validate_templates(
    templates: Sequence[str], source: str = "templates", max_templates: int | None = None
) -> list[str]:
    templates = [t.strip() for t in templates if t.strip()]
    if not templates:
        raise ValueError(f"{source}: no templates found (give 'a photo of a {{}}.' or a file, one per line)")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"{source}: every template needs a '{{}}' for the label, got {bad[:3]}")
    if max_templates is not None and len(templates) > max_templates:
        raise ValueError(f"{source}: {len(templates)} templates, at most {max_templates} allowed")
    duplicates = sorted(t for t, n in Counter(templates).items() if n > 1)
    if duplicates:
        raise ValueError(f"{source}: duplicate templates {duplicates[:3]} (each would count twice)")
    return templates


def parse_labels(spec: str) -> list[str]:
    """`"cat,dog"` or a path to a UTF-8 text file with one label per line (blank lines and #comments
    skipped, a byte-order mark dropped)."""
    if _is_file(spec):
        path = Path(spec).expanduser()
        return validate_labels(_lines(path, "labels file"), str(path))
    return validate_labels(spec.split(","), "--labels")


def parse_templates(spec: str | None) -> list[str]:
    """None -> ['a photo of a {}.']; else a UTF-8 file of templates (one per line) or '|'-separated ones."""
    if not spec:
        return list(DEFAULT_TEMPLATES)
    if _is_file(spec):
        path = Path(spec).expanduser()
        return validate_templates(_lines(path, "templates file"), str(path))
    return validate_templates(spec.split("|"), "--templates")
