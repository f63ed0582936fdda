"""Flickr8k for the caption recipes (../shared/data/flickr8k, research use only: never copied).

`load_flickr8k(folder, "train")` reads `captions.csv` through the library's one caption-table source
(`clipforge.data.open_caption_table`: decoded once into the memory-mapped image cache, captions grouped per
image). `hold_out(data, count, seed)` splits the official train images into train / model-selection parts, so
no choice is ever made on the official val split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class CaptionedImages:
    images: Tensor  # (N, H, W, 3) uint8
    captions: list[list[str]]  # per image, its captions in table order

    @property
    def flat_captions(self) -> list[str]:
        """Every caption, image-major (the row order of `captioner(...).texts`)."""
        return [c for per_image in self.captions for c in per_image]

    @property
    def caption_image(self) -> Tensor:  # (M,) image index of each flat caption
        return torch.tensor([i for i, per_image in enumerate(self.captions) for _ in per_image])

    def captioner(self, seed: int = 0, context_length: int = 77, tokenizer=None):
        """`clipforge.data.ImageCaptions` over these captions: one per image per epoch, keyed by (seed, epoch, i)."""
        from clipforge.data import ImageCaptions

        return ImageCaptions(self.captions, seed, context_length, tokenizer)

    def subset(self, index: Tensor) -> CaptionedImages:
        return CaptionedImages(self.images[index], [self.captions[i] for i in index.tolist()])

    def first_captions(self, count: int) -> CaptionedImages:
        """The same images with only their first `count` captions (fewer captions to encode)."""
        if count < 1:
            raise ValueError(f"first_captions(count={count}): count must be >= 1")
        return CaptionedImages(self.images, [per_image[:count] for per_image in self.captions])

    def __len__(self) -> int:
        return len(self.captions)


def load_flickr8k(
    folder: str | Path, split: str = "train", cache_dir: str | Path | None = None, progress: bool = False
) -> CaptionedImages:
    """One split of Flickr8k (`train`: 6,000 images, `val`: 1,000; five captions each)."""
    from clipforge.data import open_caption_table

    table = Path(folder) / "captions.csv"
    arrays, captions = open_caption_table(table, split, cache_dir=cache_dir, progress=progress)
    return CaptionedImages(torch.as_tensor(arrays.images), captions.captions)


def hold_out(data: CaptionedImages, count: int, seed: int = 0) -> tuple[CaptionedImages, CaptionedImages]:
    """(train, held-out): `count` images (with all their captions) chosen by a seeded permutation."""
    if not 0 <= count < len(data):
        raise ValueError(f"hold-out count {count} must be in [0, {len(data)})")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(order[count:].sort().values), data.subset(order[:count].sort().values)
