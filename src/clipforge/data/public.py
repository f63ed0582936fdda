"""`open_labelled_dataset`: one entry point for a labelled image set in any of its public layouts.

Detected layouts (checked in this order):
- CIFAR python pickles: `cifar-10-python.tar.gz` as downloaded, or a folder holding/being `cifar-10-batches-py`
  (also `cifar-100-python`);
- WebDataset shards: a `.tar`/`.tar.gz` file, a glob / brace pattern, or a folder of shards (shards whose name
  starts with the split are preferred); labels from `.cls`, class names from `.json` `class_name` or classes.txt;
- a label table: a `.csv`/`.tsv`/`.jsonl` file, or a folder with `<split>.csv` (columns `path,label`);
- ImageFolder: `ROOT/images/<split>/<class>/`, `ROOT/<split>/<class>/` or `ROOT/<class>/`.
Everything but CIFAR pickles is decoded once into a memory-mapped uint8 array cache (see `cache.py`).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from clipforge.data.cache import cached_records, cached_shards
from clipforge.data.captions import ImageCaptions, Tokenizer
from clipforge.data.cifar import load_cifar_python
from clipforge.data.csvjsonl import read_table, table_rows
from clipforge.data.errors import DataSourceError, SkipCounter
from clipforge.data.folders import read_image_folder
from clipforge.data.labelled import LabelledArrays, read_classes
from clipforge.data.tarshards import expand_shards

_CIFAR_FOLDERS = {"cifar-10-batches-py": 10, "cifar-100-python": 100}
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
_SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def _archive_cifar(path: Path) -> int | None:
    """10 or 100 when the tar archive holds CIFAR python batches, else None (read only the first members)."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for _, member in zip(range(4), tar):
                top = member.name.split("/")[0]
                if top in _CIFAR_FOLDERS:
                    return _CIFAR_FOLDERS[top]
    except (tarfile.TarError, OSError):
        return None
    return None


def _folder_cifar(path: Path) -> tuple[Path, int] | None:
    for name, count in _CIFAR_FOLDERS.items():
        if (path / name).is_dir():
            return path / name, count
        if path.name == name:
            return path, count
    if (path / "batches.meta").is_file():
        return path, 10
    for archive in sorted(path.glob("cifar-10*-python.tar.gz")):
        return archive, 100 if "100" in archive.name else 10
    return None


def classes_near(*folders: Path) -> list[str] | None:
    """The names in the first `classes.txt` found in these folders (label = line number), None if none."""
    for folder in folders:
        if (folder / "classes.txt").is_file():
            return read_classes(folder / "classes.txt")
    return None


def detect_layout(path: str | Path, split: str = "train") -> tuple[str, object]:
    """(kind, what to read): kind is one of cifar, shards, table, imagefolder."""
    text = str(path)
    path = Path(path)
    if any(ch in text for ch in "*?[{"):
        return "shards", expand_shards(text)
    if path.is_file():
        if path.name.endswith(_TABLE_SUFFIXES):
            return "table", path
        if path.name.endswith(_SHARD_SUFFIXES):
            count = _archive_cifar(path)
            return ("cifar", (path, count)) if count else ("shards", [path])
        raise DataSourceError(path, "not a CIFAR archive, .tar/.tar.gz shard or .csv/.tsv/.jsonl table")
    if not path.is_dir():
        raise DataSourceError(path, "data path not found")
    found = _folder_cifar(path)
    if found:
        return "cifar", found
    shards = sorted(p for p in path.iterdir() if p.name.endswith(_SHARD_SUFFIXES))
    if shards:
        of_split = [p for p in shards if p.name.startswith(split)]
        return "shards", of_split or shards
    for table in (path / f"{split}{s}" for s in _TABLE_SUFFIXES):
        if table.is_file():
            return "table", table
    for folder in (path / "images" / split, path / split):
        if folder.is_dir():
            return "imagefolder", folder
    if any(p.is_dir() for p in path.iterdir()):
        return "imagefolder", path
    raise DataSourceError(
        path,
        "no known layout: expected cifar-10-batches-py/ (or the .tar.gz), WebDataset shards, "
        f"{split}.csv, images/{split}/<class>/, {split}/<class>/ or <class>/ folders",
    )


def decode_size(path: str | Path, split: str, image_size: int | None) -> int | None:
    """The `image_size` to decode `path` at: `image_size`, or None for CIFAR pickles (stored at 32x32; the
    loader resizes them)."""
    return None if detect_layout(path, split)[0] == "cifar" else image_size


def open_labelled_dataset(
    path: str | Path,
    split: str = "train",
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    num_workers: int = 2,
    progress: bool = True,
) -> LabelledArrays:
    """A labelled image set in any public layout -> `LabelledArrays` (uint8 NHWC, memory-mapped from the cache).

    `image_size` resizes (shorter side + centre crop) while decoding; needed when images differ in size.
    Unreadable images are skipped and counted in the result's `skips`.
    """
    kind, target = detect_layout(path, split)
    if kind == "cifar":
        root, count = target
        arrays = load_cifar_python(root, split, count)
        if image_size not in (None, 32):
            raise ValueError(
                f"CIFAR images are 32x32; resize in the loader (augment image_size), not {image_size}"
            )
        return LabelledArrays.from_arrays(arrays, source=f"cifar-python:{root}")
    if kind == "shards":
        decoded = cached_shards(target, cache_dir, image_size, num_workers=num_workers, progress=progress)
        classes = classes_near(target[0].parent, target[0].parent.parent)
        if classes is None and decoded.class_names:
            classes = [decoded.class_names.get(i, str(i)) for i in range(max(decoded.class_names) + 1)]
        if classes is None:
            classes = [str(i) for i in range(int(decoded.labels.max()) + 1)]
        return LabelledArrays.from_arrays(decoded, classes, source=f"shards:{target[0].parent}")
    if kind == "table":
        skips = SkipCounter()
        records = read_table(target, caption_column=None, label_column="label", skips=skips)
        classes = classes_near(target.parent) or _classes_from_table(target)
    else:
        records, classes = read_image_folder(
            target, classes_near(target, target.parent, target.parent.parent)
        )
        skips = SkipCounter()
    decoded = cached_records(records, cache_dir, image_size, num_workers=num_workers, progress=progress)
    skips.merge(decoded.skips)
    decoded.skips = skips
    return LabelledArrays.from_arrays(decoded, classes, source=f"{kind}:{target}")


def _classes_from_table(path: Path) -> list[str]:
    """Class names from a `class_name` column, else the label numbers as names."""
    names: dict[int, str] = {}
    for _, row in table_rows(path, None):
        label = str(row.get("label", "")).strip()
        if label.isdigit():
            names.setdefault(int(label), str(row.get("class_name") or label))
    return [names.get(i, str(i)) for i in range(max(names) + 1)] if names else []


def open_caption_shards(
    shards, image_size: int | None = None, context_length: int = 77, cache_dir: str | Path | None = None,
    num_workers: int = 2, progress: bool = True, seed: int = 0, tokenizer: Tokenizer | None = None,
) -> tuple[LabelledArrays, ImageCaptions]:  # fmt: skip
    """Image–text shards (`.jpg` + `.txt`) decoded once (memory-mapped): pass both to
    `ArrayLoader(data, captions, ...)`. Each sample's caption is its own (one per image).

    Samples with an empty or non-UTF-8 caption or a bad image are skipped (counted in `data.skips`).
    """
    paths = expand_shards(shards)
    decoded = cached_shards(
        paths, cache_dir, image_size, want_captions=True, num_workers=num_workers, progress=progress
    )
    if len(decoded) == 0:
        raise DataSourceError(paths[0], f"no usable image-caption sample in {len(paths)} shard(s): "
                              f"{decoded.skips.summary()}")  # fmt: skip
    decoded.labels = (
        np.full(len(decoded), -1, dtype=np.int64) if decoded.labels.min(initial=0) < 0 else decoded.labels
    )
    classes = [decoded.class_names.get(i, str(i)) for i in range(int(decoded.labels.max(initial=-1)) + 1)]
    data = LabelledArrays.from_arrays(decoded, classes, source=f"shards:{paths[0].parent}")
    return data, ImageCaptions([[c] for c in decoded.captions], seed, context_length, tokenizer)
