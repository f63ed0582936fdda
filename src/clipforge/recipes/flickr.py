"""Flickr8k as uint8 arrays + five captions per image (../shared/data/flickr8k, research use only: never copied).

`load_flickr8k(folder, "train")` decodes the split's images once (cached by clipforge.data's image cache when
it is available) and groups the captions per image. `hold_out(data, count, seed)` splits the official train
images into train / model-selection parts, so no choice is ever made on the official val split.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclass
class CaptionedImages:
    images: Tensor  # (N, H, W, 3) uint8
    captions: list[list[str]]  # per image, its captions in caption_idx order
    paths: list[str]

    @property
    def flat_captions(self) -> list[str]:
        return [c for per_image in self.captions for c in per_image]

    @property
    def caption_image(self) -> Tensor:  # (M,) image index of each flat caption
        return torch.tensor([i for i, per_image in enumerate(self.captions) for _ in per_image])

    def subset(self, index: Tensor) -> CaptionedImages:
        keep = index.tolist()
        return CaptionedImages(
            self.images[index], [self.captions[i] for i in keep], [self.paths[i] for i in keep]
        )

    def __len__(self) -> int:
        return len(self.paths)


def read_caption_table(folder: Path, split: str) -> tuple[list[str], list[list[str]]]:
    table = folder / "captions.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table}: Flickr8k captions table not found (path,caption,...,split)")
    grouped: dict[str, list[str]] = {}
    with open(table, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["split"] == split:
                grouped.setdefault(row["path"], []).append(row["caption"])
    if not grouped:
        raise ValueError(f"{table}: no rows with split {split!r} (Flickr8k has 'train' and 'val')")
    return list(grouped), list(grouped.values())


def decode_images(folder: Path, paths: list[str]) -> Tensor:
    """(N, H, W, 3) uint8; all Flickr8k images here are 128x128."""
    from PIL import Image

    arrays = [np.asarray(Image.open(folder / p).convert("RGB")) for p in paths]
    return torch.from_numpy(np.stack(arrays))


def load_flickr8k(
    folder: str | Path, split: str = "train", cache_dir: str | Path | None = None
) -> CaptionedImages:
    folder = Path(folder)
    paths, captions = read_caption_table(folder, split)
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "clipforge" / "images"
    cache_file = cache / f"flickr8k-{split}-{len(paths)}.npy"
    if cache_file.is_file():
        images = torch.from_numpy(np.load(cache_file, mmap_mode="r").copy())
    else:
        images = decode_images(folder, paths)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_file, images.numpy())
    return CaptionedImages(images, captions, paths)


def hold_out(data: CaptionedImages, count: int, seed: int = 0) -> tuple[CaptionedImages, CaptionedImages]:
    """(train, held-out): `count` images (with all their captions) chosen by a seeded permutation."""
    if not 0 <= count < len(data):
        raise ValueError(f"hold-out count {count} must be in [0, {len(data)})")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[count:].sort().values), data.subset(order[:count].sort().values)
