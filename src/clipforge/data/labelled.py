"""Labelled images held in memory, captioned by templates: the fast path of the CIFAR demo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clipforge.data.cache import CachedImages
from clipforge.data.cifar import ArrayImages
from clipforge.data.errors import SkipCounter


@dataclass
class LabelledArrays:
    """(N, H, W, 3) uint8 images, (N,) int64 labels (-1: none), class names; `source` says where they came from."""

    images: Tensor
    labels: Tensor
    classes: list[str]
    source: str = ""
    skips: SkipCounter | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(
                f"images must be (N, H, W, 3) uint8, got {tuple(self.images.shape)} {self.images.dtype}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        bad = (self.labels < -1) | (self.labels >= len(self.classes))  # -1: no label (image-text data)
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"{self.source}: sample {first} has label {int(self.labels[first])}, valid -1 (none) or "
                f"0..{len(self.classes) - 1}"
            )

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Tensor) -> LabelledArrays:
        """The samples at `index` (a copy: memory-mapped pixels are read into memory)."""
        return LabelledArrays(self.images[index], self.labels[index], self.classes, self.source)

    @classmethod
    def from_arrays(
        cls, data: ArrayImages | CachedImages, classes: Sequence[str] | None = None, source: str = ""
    ):
        names = list(classes) if classes is not None else list(getattr(data, "classes", []))
        return cls(
            torch.from_numpy(np.ascontiguousarray(data.images)),
            torch.from_numpy(np.asarray(data.labels, dtype=np.int64)),
            names,
            source or str(getattr(data, "path", "") or ""),
            getattr(data, "skips", None),
        )


def read_classes(path: str | Path) -> list[str]:
    """`classes.txt`: one class name per line (label = 0-based line number)."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [n for n in names if n]
