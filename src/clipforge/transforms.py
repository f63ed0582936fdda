"""Image preprocessing that matches OpenAI's CLIP / open_clip: bicubic shorter-side resize, centre crop, RGB,
normalise (or open_clip's "squash": both sides resized, no crop); plus a train-time random resized crop and a JPEG loader that decodes at reduced scale.

Like OpenAI and open_clip, images are resized in their own mode and converted to RGB after cropping, so for
RGB, L, LA, RGBA, CMYK, YCbCr, F and 8-bit-range I images the output equals open_clip's eval transform.
Where PIL cannot resize a mode sensibly we convert first (see `to_resizable` and docs/transforms.md):
palette (P, PA) and 1-bit images, whose indices/bits PIL would nearest-resize or interpolate as numbers,
and 16-bit images, which PIL's RGB conversion clips to white instead of scaling.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from clipforge.models.config import PreprocessConfig

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
CONVERT_BEFORE_RESIZE = {"P": "RGB", "PA": "RGBA", "1": "L", "La": "LA"}


def sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """16-bit grey (I;16*, or I with values above 255) -> 8-bit L, scaling 0..65535 to 0..255 with rounding."""
    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def to_resizable(image: Image.Image) -> Image.Image:
    """The image in a mode whose pixel values PIL can interpolate; unchanged for the common modes."""
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.getextrema()[1] > 255):
        return sixteen_bit_to_l(image)
    target = CONVERT_BEFORE_RESIZE.get(image.mode)
    return image.convert(target) if target else image


def _convert_rgb(image: Image.Image) -> Image.Image:
    """PIL's RGB conversion (alpha dropped, as OpenAI's `_convert_image_to_rgb`), with a clear error."""
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ValueError(f"cannot convert a PIL image of mode {image.mode!r} to RGB: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, scaling 16-bit images instead of clipping them."""
    return _convert_rgb(to_resizable(image))


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
        array = np.asarray(_convert_rgb(image), dtype=np.float32) / np.float32(255)  # (H, W, 3)
        tensor = torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W)
        return (tensor - self._mean) / self._std


class Preprocess(_Normalise):
    """Eval transform: PIL image -> (3, S, S) float tensor; picklable for DataLoader workers."""

    def resize_crop(self, image: Image.Image) -> Image.Image:
        size = self.config.image_size
        image = to_resizable(image)
        if self.config.resize_mode == "squash":  # both sides to `size`, no crop (open_clip's "squash")
            if image.size == (size, size):
                return image
            return image.resize((size, size), _RESAMPLE[self.config.interpolation])
        return center_crop(resize_shorter_side(image, size, self.config.interpolation), size)

    def __call__(self, image: Image.Image) -> Tensor:
        return self.to_tensor(self.resize_crop(image))

    def __repr__(self) -> str:
        return f"Preprocess({self.config})"


class TrainPreprocess(_Normalise):
    """Train transform: random resized crop (area fraction `scale`, aspect `ratio`, torch RNG) then normalise.

    Draws crops with torchvision's RandomResizedCrop.get_params, so a seeded run crops exactly as
    open_clip's default train transform (scale (0.9, 1.0)).
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
        from torchvision.transforms import RandomResizedCrop  # lazy: keeps `import clipforge` light

        image = to_resizable(image)
        size = self.config.image_size
        top, left, height, width = RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
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
    """Open and decode an image. For a JPEG with `draft`, decode at 1/2, 1/4 or 1/8 scale (libjpeg DCT
    scaling) as long as both sides stay >= target_size, so a shorter-side resize to target_size still
    only downsamples. 2-4x faster on photos; see docs/transforms.md for the pixel differences.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if draft and target_size and image.format == "JPEG":
                image.draft(image.mode, (target_size, target_size))
            image.load()
    except OSError as error:
        raise OSError(f"{path}: cannot read image: {error}") from error
    return image
