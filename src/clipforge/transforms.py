"""Image preprocessing that matches OpenAI's CLIP / open_clip: bicubic shorter-side resize, centre crop, RGB,
normalise; plus a train-time random resized crop and a JPEG loader that decodes at reduced scale.

Like OpenAI and open_clip, images are resized in their own mode and converted to RGB after cropping, so for
RGB, L, LA, RGBA, CMYK, YCbCr, F and 8-bit-range I images the output equals open_clip's eval transform.
Where PIL cannot resize a mode sensibly we convert first (see `to_resizable` and docs/transforms.md):
palette (P, PA) and 1-bit images, whose indices/bits PIL would nearest-resize or interpolate as numbers,
and 16-bit images, which PIL's RGB conversion clips to white instead of scaling.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from clipforge.decode import convert_rgb, open_image, to_resizable, to_rgb
from clipforge.models.config import PreprocessConfig

__all__ = ["Preprocess", "TrainPreprocess", "image_transform", "load_image", "to_resizable", "to_rgb"]

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def resize_shorter_side(image: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Resize so the shorter side is `size`; the longer becomes int(size * long / short), as torchvision."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    if new_size == image.size:
        return image
    return image.resize(new_size, _RESAMPLE[interpolation])


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The central size x size square (offsets rounded as torchvision's CenterCrop)."""
    width, height = image.size
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


class _Normalise:
    """RGB PIL image -> (3, H, W) float32, (x / 255 - mean) / std, exactly as ToTensor + Normalize."""

    def __init__(self, config: PreprocessConfig):
        self.config = config
        self._mean = torch.tensor(config.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(config.std, dtype=torch.float32).view(3, 1, 1)

    def to_tensor(self, image: Image.Image) -> Tensor:
        """`image` must already have gone through `to_resizable` (before resizing: overshoot may exceed 255)."""
        array = np.asarray(convert_rgb(image), dtype=np.float32) / np.float32(255)  # (H, W, 3)
        tensor = torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W)
        return (tensor - self._mean) / self._std


class Preprocess(_Normalise):
    """Eval transform: PIL image -> (3, S, S) float tensor; picklable for DataLoader workers."""

    def resize_crop(self, image: Image.Image) -> Image.Image:
        size = self.config.image_size
        if self.config.resize_mode == "squash":  # the whole image, aspect ratio not kept
            return to_resizable(image).resize((size, size), _RESAMPLE[self.config.interpolation])
        image = resize_shorter_side(to_resizable(image), size, self.config.interpolation)
        return center_crop(image, size)

    def __call__(self, image: Image.Image) -> Tensor:
        return self.to_tensor(self.resize_crop(image))

    def __repr__(self) -> str:
        return f"Preprocess({self.config})"


def random_resized_crop_box(
    image_size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop, drawn from torch's global RNG exactly as torchvision's
    `RandomResizedCrop.get_params` draws it (same calls, same order), so torchvision is not needed."""
    width, height = image_size
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,)).item()
            left = torch.randint(0, width - w + 1, size=(1,)).item()
            return top, left, h, w
    in_ratio = width / height  # ten misses: the central crop clamped to the ratio range
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TrainPreprocess(_Normalise):
    """Train transform: random resized crop (area fraction `scale`, aspect `ratio`, torch RNG) then normalise.

    Draws crops as torchvision's RandomResizedCrop.get_params does (`random_resized_crop_box`), so a seeded
    run crops exactly as open_clip's default train transform (scale (0.9, 1.0)).
    """

    def __init__(
        self,
        config: PreprocessConfig,
        scale: tuple[float, float] = (0.9, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ):
        super().__init__(config)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)

    def __call__(self, image: Image.Image) -> Tensor:
        image = to_resizable(image)
        size = self.config.image_size
        top, left, height, width = random_resized_crop_box(image.size, self.scale, self.ratio)
        image = image.crop((left, top, left + width, top + height))
        if image.size != (size, size):
            image = image.resize((size, size), _RESAMPLE[self.config.interpolation])
        return self.to_tensor(image)

    def __repr__(self) -> str:
        return f"TrainPreprocess({self.config}, scale={self.scale}, ratio={self.ratio})"


def image_transform(
    config: PreprocessConfig, train: bool = False, train_scale: tuple[float, float] = (0.9, 1.0)
) -> Preprocess | TrainPreprocess:
    """The eval transform, or with `train=True` the random-resized-crop one (open_clip's default)."""
    return TrainPreprocess(config, scale=train_scale) if train else Preprocess(config)


def load_image(path: str | os.PathLike, target_size: int | None = None, draft: bool = True) -> Image.Image:
    """`clipforge.decode.open_image` with a JPEG draft decode to `target_size` when `draft` (1/2, 1/4 or
    1/8 scale while both sides stay >= target_size, so a shorter-side resize still only downsamples;
    2-4x faster on photos; see docs/transforms.md for the pixel differences)."""
    return open_image(path, draft_size=target_size if draft else None)
