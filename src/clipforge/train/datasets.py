"""Small map-style datasets the trainer can build from its config: synthetic pairs and CSV files.

Large or sharded data comes from clipforge.data (pass it to `fit(train_data=...)`); these cover tests, smoke
runs and CSV folders of images. Both return batches via `get_batch(indices, epoch)` and are deterministic.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from PIL import Image

COLOR_NAMES = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "cyan", "pink")
COLOR_RGB = (
    (1.0, 0.0, 0.0),
    (0.0, 0.8, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
    (0.5, 0.0, 0.5),
    (1.0, 0.5, 0.0),
    (1.0, 1.0, 1.0),
    (0.0, 0.0, 0.0),
    (0.0, 1.0, 1.0),
    (1.0, 0.6, 0.7),
)


def tokenize_captions(captions: list[str], context_length: int, tokenizer=None) -> torch.Tensor:
    """OpenAI's BPE at `context_length`, or `tokenizer` (the model's own, `clipforge.tokenizer.tokenizer_for`)."""
    if tokenizer is not None:
        return tokenizer(captions)
    from clipforge import tokenize

    return tokenize(captions, context_length=context_length, truncate=True)


class SyntheticPairs:
    """Noisy colour images captioned "a photo of a {colour}." - learnable in seconds, zero-shot testable.

    Sample i has class i % num_classes; its noise is a pure function of (seed, i)."""

    def __init__(
        self,
        num_samples: int,
        image_size: int,
        context_length: int,
        num_classes: int = 10,
        seed: int = 0,
        tokenizer=None,
    ):
        if not 1 <= num_classes <= len(COLOR_NAMES):
            raise ValueError(f"data.num_classes must be in [1, {len(COLOR_NAMES)}], got {num_classes}")
        self.num_samples, self.image_size, self.seed = num_samples, image_size, seed
        self.classnames = list(COLOR_NAMES[:num_classes])
        captions = [f"a photo of a {c}." for c in self.classnames]
        self.class_tokens = tokenize_captions(captions, context_length, tokenizer)

    def __len__(self) -> int:
        return self.num_samples

    def image(self, index: int) -> torch.Tensor:  # (3, S, S)
        generator = torch.Generator().manual_seed(self.seed * 7_919 + index)
        rgb = torch.tensor(COLOR_RGB[index % len(self.classnames)]).view(3, 1, 1)
        noise = torch.rand(3, self.image_size, self.image_size, generator=generator)
        return (0.7 * rgb + 0.3 * noise - 0.5) / 0.25

    def get_batch(self, indices: list[int], epoch: int = 0) -> dict[str, torch.Tensor]:
        index = torch.tensor(indices, dtype=torch.int64)
        labels = index % len(self.classnames)
        return {
            "images": torch.stack([self.image(i) for i in indices]),
            "text": self.class_tokens[labels],
            "labels": labels,
            "index": index,
        }


class CsvPairs:
    """Rows of a CSV: `path` (relative to the CSV's folder) plus `caption`, or `class_name` made into a caption
    with `caption_template`. Images get the model's eval transform (no random augmentation)."""

    def __init__(
        self,
        csv_path: str | Path,
        transform,
        context_length: int,
        caption_template: str = "a photo of a {}.",
        tokenizer=None,
    ):
        self.csv_path = Path(csv_path)
        self.root, self.transform = self.csv_path.parent, transform
        rows = read_csv_rows(self.csv_path, required=("path",))
        if "caption" in rows[0]:
            captions = [r["caption"] for r in rows]
        elif "class_name" in rows[0]:
            captions = [caption_template.format(r["class_name"].replace("_", " ")) for r in rows]
        else:
            raise ValueError(
                f"{self.csv_path}: needs a 'caption' or a 'class_name' column, has {sorted(rows[0])}"
            )
        self.paths = [r["path"] for r in rows]
        self.labels = torch.tensor([int(r["label"]) for r in rows]) if "label" in rows[0] else None
        self.tokens = tokenize_captions(captions, context_length, tokenizer)

    def __len__(self) -> int:
        return len(self.paths)

    def get_batch(self, indices: list[int], epoch: int = 0) -> dict[str, torch.Tensor]:
        index = torch.tensor(indices, dtype=torch.int64)
        images = [self.transform(Image.open(self.root / self.paths[i]).convert("RGB")) for i in indices]
        batch = {"images": torch.stack(images), "text": self.tokens[index], "index": index}
        if self.labels is not None:
            batch["labels"] = self.labels[index]
        return batch


def read_csv_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror})") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {sorted(rows[0])}")
    return rows


def load_labelled_csv(csv_path: str | Path, transform, max_images: int | None = None):
    """(images (N, 3, H, W), labels (N,), classnames by label id) from a CSV with path, label, class_name."""
    csv_path = Path(csv_path)
    rows = read_csv_rows(csv_path, required=("path", "label", "class_name"))
    names: dict[int, str] = {}
    for row in rows:
        names.setdefault(int(row["label"]), row["class_name"].replace("_", " "))
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{csv_path}: labels must be 0..C-1, got {sorted(names)}")
    if max_images is not None and len(rows) > max_images:
        step = len(rows) / max_images  # spread over the file (CSV rows are often grouped by class)
        rows = [rows[int(i * step)] for i in range(max_images)]
    images = torch.stack([transform(Image.open(csv_path.parent / r["path"]).convert("RGB")) for r in rows])
    labels = torch.tensor([int(r["label"]) for r in rows])
    return images, labels, [names[i] for i in range(len(names))]
