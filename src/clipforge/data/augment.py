"""Batched train-time augmentation on uint8 image batches, random per sample from (seed, epoch, index).

Randomness is counter-based (splitmix64 of the key), so a sample gets the same crop and flip whatever batch,
worker or process it lands in: resumed and re-sharded runs see identical pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clipforge.models.config import OPENAI_MEAN, OPENAI_STD

# Streams keep the random numbers of different decisions independent.
STREAM_CROP_Y, STREAM_CROP_X, STREAM_FLIP, STREAM_SCALE, STREAM_RATIO, STREAM_TEMPLATE, STREAM_CAPTION = (
    range(1, 8)
)

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def mix64(*words: int) -> int:
    """splitmix64 folded over Python ints (seeds, counters): one well-spread 64-bit hash of all of them."""
    state = np.uint64(0)
    with np.errstate(over="ignore"):
        for word in words:
            state = _splitmix64(state + np.uint64(word & 0xFFFFFFFFFFFFFFFF))
    return int(state)


def keyed_uniform(seed: int, epoch: int, index: Tensor | np.ndarray, stream: int) -> np.ndarray:
    """(B,) float64 in [0, 1): a pure function of (seed, epoch, index, stream)."""
    index = np.asarray(index, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.uint64(seed % 2**64) ^ _splitmix64(np.uint64(epoch % 2**64) + np.uint64(stream)))
        bits = _splitmix64(index ^ key)
    return (bits >> np.uint64(11)).astype(np.float64) / float(2**53)


@dataclass(frozen=True)
class AugmentConfig:
    """`crop_flip`: pad by `padding` then random crop to `image_size` (CIFAR style); `resized_crop_flip`: random
    area `scale` and aspect `ratio` crop resized to `image_size`; `none`: resize only. Mean/std normalise last."""

    kind: Literal["crop_flip", "resized_crop_flip", "none"] = "crop_flip"
    image_size: int = 32
    padding: int = 4
    pad_mode: Literal["constant", "reflect"] = "reflect"
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD


def to_float(images: Tensor) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(images: Tensor, mean, std) -> Tensor:
    """In place on a (B, 3, H, W) float batch."""
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return images.sub_(mean_t).div_(std_t)


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def pad_crop(images: Tensor, offsets_y: Tensor, offsets_x: Tensor, padding: int, mode: str) -> Tensor:
    """Pad a (B, 3, H, W) batch by `padding` and cut each sample's (H, W) window at its offset."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4, mode=mode)  # (B, 3, H+2p, W+2p)
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # (B, 3, 2p+1, 2p+1, H, W), a view
    return windows[torch.arange(batch), :, offsets_y, offsets_x]  # (B, 3, H, W)


def _resized_crop_grid(config: AugmentConfig, seed: int, epoch: int, index, flips: np.ndarray) -> Tensor:
    """(B, 2, 3) affine matrices (as for `affine_grid`): crop area/aspect/position and flip per sample."""
    lo, hi = config.scale
    area = lo + (hi - lo) * keyed_uniform(seed, epoch, index, STREAM_SCALE)
    log_r = np.log(config.ratio)
    aspect = np.exp(log_r[0] + (log_r[1] - log_r[0]) * keyed_uniform(seed, epoch, index, STREAM_RATIO))
    width = np.clip(np.sqrt(area * aspect), 0.0, 1.0)  # fractions of the image side
    height = np.clip(np.sqrt(area / aspect), 0.0, 1.0)
    centre_x = (1 - width) * (2 * keyed_uniform(seed, epoch, index, STREAM_CROP_X) - 1)
    centre_y = (1 - height) * (2 * keyed_uniform(seed, epoch, index, STREAM_CROP_Y) - 1)
    sign = np.where(flips, -1.0, 1.0)
    theta = np.zeros((len(area), 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 2] = width * sign, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    return torch.from_numpy(theta)


def _axis_aligned_grid(theta: Tensor, size: int) -> Tensor:
    """(B, 2, 3) scale-and-shift matrices -> (B, S, S, 2) sampling grid, equal to `affine_grid(theta,
    align_corners=False)` for matrices without rotation, built by broadcasting instead of a batched matmul."""
    centres = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1  # (S,) output pixel centres
    grid_x = theta[:, 0, 0, None] * centres + theta[:, 0, 2, None]  # (B, S)
    grid_y = theta[:, 1, 1, None] * centres + theta[:, 1, 2, None]  # (B, S)
    batch = len(theta)
    return torch.stack(
        [grid_x[:, None, :].expand(batch, size, size), grid_y[:, :, None].expand(batch, size, size)], dim=-1
    )


def _resized_crop(images: Tensor, index, epoch: int, seed: int, config: AugmentConfig, flips) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, S, S) normalised: the crops sampled bilinearly from the 0..255 values, then
    scaled and normalised in one pass (sampling commutes with the per-channel affine map, so it runs on the
    smaller output)."""
    theta = _resized_crop_grid(config, seed, epoch, index, flips)
    x = images.permute(0, 3, 1, 2).float()  # (B, 3, H, W), 0..255
    grid = _axis_aligned_grid(theta, config.image_size)  # (B, S, S, 2)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False).contiguous()
    std = torch.tensor(config.std, dtype=x.dtype).view(1, 3, 1, 1)
    mean = torch.tensor(config.mean, dtype=x.dtype).view(1, 3, 1, 1)
    return x.mul_(1.0 / (255.0 * std)).sub_(mean / std)


def augment_batch(images: Tensor, index: Tensor, epoch: int, seed: int, config: AugmentConfig) -> Tensor:
    """(B, H, W, 3) uint8 + (B,) sample indices -> (B, 3, S, S) float32, augmented and normalised."""
    flips = (
        keyed_uniform(seed, epoch, index, STREAM_FLIP) < 0.5 if config.flip else np.zeros(len(index), bool)
    )
    if config.kind == "resized_crop_flip":
        return _resized_crop(images, index, epoch, seed, config, flips)
    x = to_float(images)  # (B, 3, H, W)
    if config.kind == "crop_flip":
        x = _resize(x, config.image_size)
        span = 2 * config.padding + 1
        oy = torch.from_numpy((keyed_uniform(seed, epoch, index, STREAM_CROP_Y) * span).astype(np.int64))
        ox = torch.from_numpy((keyed_uniform(seed, epoch, index, STREAM_CROP_X) * span).astype(np.int64))
        if config.padding:
            x = pad_crop(x, oy, ox, config.padding, config.pad_mode)
        flip_mask = torch.from_numpy(flips)[:, None, None, None]
        x = torch.where(flip_mask, x.flip(-1), x)
    elif config.kind == "none":
        x = _resize(x, config.image_size)
    else:
        raise ValueError(f"AugmentConfig.kind {config.kind!r}; valid: crop_flip, resized_crop_flip, none")
    return normalize(x.contiguous(), config.mean, config.std)


def eval_batch(images: Tensor, image_size: int, mean=OPENAI_MEAN, std=OPENAI_STD) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, S, S) float32, resized (no crop) and normalised: the eval-side twin."""
    return normalize(_resize(to_float(images), image_size).contiguous(), mean, std)
