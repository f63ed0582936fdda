"""Image preprocessing that matches OpenAI's CLIP: bicubic shorter-side resize, centre crop, RGB, normalise."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from clipforge.models.config import PreprocessConfig

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB."""
    return image if image.mode == "RGB" else image.convert("RGB")


class Preprocess:
    """Callable PIL image -> (3, S, S) float tensor; picklable for DataLoader workers."""

    def __init__(self, config: PreprocessConfig):
        self.config = config
        self._mean = torch.tensor(config.mean).view(3, 1, 1)
        self._std = torch.tensor(config.std).view(3, 1, 1)

    def resize_crop(self, image: Image.Image) -> Image.Image:
        size = self.config.image_size
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        if short != size or long != size:
            new_long = int(size * long / short)
            new_size = (size, new_long) if w <= h else (new_long, size)
            image = image.resize(new_size, _RESAMPLE[self.config.interpolation])
        w, h = image.size
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        return image.crop((left, top, left + size, top + size))

    def __call__(self, image: Image.Image) -> Tensor:
        image = to_rgb(self.resize_crop(image))
        array = np.asarray(image, dtype=np.float32) / 255.0  # (S, S, 3)
        tensor = torch.from_numpy(array).permute(2, 0, 1)  # (3, S, S)
        return (tensor - self._mean) / self._std

    def __repr__(self) -> str:
        return f"Preprocess({self.config})"


def image_transform(config: PreprocessConfig, train: bool = False):
    """The eval transform (train-time augmentation lives with the trainer's data pipeline)."""
    return Preprocess(config)
