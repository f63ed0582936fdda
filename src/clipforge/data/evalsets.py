"""Evaluation sets as ready tensors: labelled images for zero-shot, image/caption lists for retrieval."""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from clipforge.data.augment import eval_batch
from clipforge.data.errors import DataSourceError
from clipforge.data.labelled import LabelledArrays
from clipforge.data.public import decode_size, open_labelled_dataset
from clipforge.models.config import OPENAI_MEAN, OPENAI_STD


@dataclass
class LabelledTensors:
    """Zero-shot eval input: images (N, 3, S, S) float32 normalised, labels (N,) int64, class names."""

    images: Tensor
    labels: Tensor
    classes: list[str]


def to_eval_tensors(
    data: LabelledArrays, image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD, batch_size: int = 1024
) -> LabelledTensors:
    """Resize + normalise the whole set in batches (no crop, no flip)."""
    chunks = [
        eval_batch(data.images[i : i + batch_size], image_size, mean, std)
        for i in range(0, len(data), batch_size)
    ]
    return LabelledTensors(torch.cat(chunks), data.labels.clone(), list(data.classes))


def load_zeroshot_eval(
    path: str | Path,
    split: str = "test",
    image_size: int = 32,
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
    cache_dir: str | Path | None = None,
    max_images: int | None = None,
) -> LabelledTensors:
    """E.g. `../shared/data/cifar10` test split (test.csv, classes.txt): 1,000 images as tensors.

    `max_images`: keep that many, evenly spaced over the set (label files are often sorted by class)."""
    data = open_labelled_dataset(
        path, split, decode_size(path, split, image_size), cache_dir, num_workers=1, progress=False
    )
    if data.skips is not None and data.skips.total:
        warnings.warn(f"{path} ({split}): evaluating without {data.skips.summary()}", stacklevel=2)
    if max_images is not None and len(data) > max_images:
        pick = (torch.arange(max_images) * (len(data) / max_images)).long()
        data = LabelledArrays(data.images[pick], data.labels[pick], data.classes, data.source, data.skips)
    return to_eval_tensors(data, image_size, mean, std)


@dataclass
class RetrievalSet:
    """Image paths and captions for retrieval; `caption_image[j]` is the image index of caption j."""

    image_paths: list[Path]
    captions: list[str]
    caption_image: list[int]
    image_ids: list[str]

    @property
    def image_captions(self) -> list[list[int]]:
        """Per image, the indices of its captions."""
        out: list[list[int]] = [[] for _ in self.image_paths]
        for caption, image in enumerate(self.caption_image):
            out[image].append(caption)
        return out


def load_retrieval_set(path: str | Path, split: str | None = "test") -> RetrievalSet:
    """`captions.csv` (`path,caption[,image_id,caption_id,split]`) like ../shared/data/coco_captions_mini.

    `path` is the CSV or its folder; `split=None` keeps every row. Images keep first-appearance order.
    """
    path = Path(path)
    table = path / "captions.csv" if path.is_dir() else path
    if not table.is_file():
        raise DataSourceError(table, "captions table not found (expected columns path,caption[,split])")
    images: dict[str, int] = {}
    result = RetrievalSet([], [], [], [])
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for column in ("path", "caption"):
            if column not in (reader.fieldnames or []):
                raise DataSourceError(
                    table, f"column missing; columns are {reader.fieldnames}", line=1, field=column
                )
        if split is not None and "split" not in reader.fieldnames:
            raise DataSourceError(table, "no split column; pass split=None", line=1, field="split")
        for row in reader:
            if split is not None and row["split"] != split:
                continue
            if row["path"] not in images:
                images[row["path"]] = len(images)
                result.image_paths.append(table.parent / row["path"])
                result.image_ids.append(row.get("image_id") or row["path"])
            result.captions.append(row["caption"].strip())
            result.caption_image.append(images[row["path"]])
    if not result.captions:
        raise DataSourceError(table, f"no rows with split {split!r}")
    return result
