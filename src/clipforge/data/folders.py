"""Image folders: caption side files (`a.jpg` + `a.txt`) and the labelled ImageFolder layout (`<class>/a.jpg`)."""

from __future__ import annotations

from pathlib import Path

from clipforge.data.errors import MISSING_FILE, DataSourceError, SkipCounter
from clipforge.data.records import IMAGE_EXTENSIONS, Record


def _images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def read_caption_folder(
    root: str | Path, caption_ext: str = ".txt", skips: SkipCounter | None = None
) -> list[Record]:
    """Every image under `root` (recursively, sorted) whose side file `<stem><caption_ext>` exists.

    Images without a caption file are counted as `missing_file` in `skips`; captions are read as bytes so the
    dataset can count empty/non-UTF-8 ones when it decodes them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(root, "caption folder not found")
    skips = skips if skips is not None else SkipCounter()
    records = []
    for image in _images_under(root):
        side = image.with_suffix(caption_ext)
        if not side.is_file():
            skips.add(MISSING_FILE, f"{side} (caption of {image.name})")
            continue
        records.append(Record(image, side.read_bytes(), None, key=str(image.relative_to(root))))
    if not records:
        raise DataSourceError(root, f"no image with a {caption_ext} caption file found")
    return records


def read_image_folder(root: str | Path, classes: list[str] | None = None) -> tuple[list[Record], list[str]]:
    """`root/<class>/*.jpg` -> records labelled by the class's position in `classes` (default: sorted folders)."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(root, "image folder not found; expected ROOT/<class>/<image>.jpg")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = list(classes) if classes else folders
    if not folders:
        raise DataSourceError(root, "no class sub-folders; expected ROOT/<class>/<image>.jpg")
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataSourceError(root / unknown[0], f"folder is not one of the {len(classes)} classes")
    records = []
    for label, name in enumerate(classes):
        folder = root / name
        if folder.is_dir():
            records += [Record(p, None, label, key=f"{name}/{p.name}") for p in _images_under(folder)]
    return records, classes
