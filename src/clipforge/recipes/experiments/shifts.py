"""Deterministic distribution shifts of uint8 image batches, each at severities 1 (mild) to 3 (strong).

All functions map (N, H, W, 3) uint8 -> (N, H, W, 3) uint8 and are pure functions of (images, severity, seed):
randomness (noise, patch order) comes from a generator seeded per call, so a shifted test set is the same on
every run. Used by `experiment robustness` as stand-ins for the paper's natural shifts (ImageNet-Sketch, -R,
...), which CIFAR-10 has no counterpart for.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SEVERITIES = (1, 2, 3)
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _check(images: Tensor, severity: int, name: str) -> Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"shift {name}: want (N, H, W, 3) uint8 images, got {tuple(images.shape)} {images.dtype}"
        )
    if severity not in SEVERITIES:
        raise ValueError(f"shift {name}: severity {severity} not in {SEVERITIES}")
    return torch.as_tensor(images)


def _to_uint8(x: Tensor) -> Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _grey(images: Tensor) -> Tensor:  # (N, H, W, 3) uint8 -> (N, H, W) float in [0, 255]
    return images.float() @ _LUMA


def greyscale(images: Tensor, severity: int, seed: int = 0) -> Tensor:
    """Blend towards luminance: 50%, 75%, 100% (severity 3 has three equal channels)."""
    images = _check(images, severity, "greyscale")
    alpha = (0.5, 0.75, 1.0)[severity - 1]
    grey = _grey(images)[..., None].expand_as(images)
    return _to_uint8((1 - alpha) * images.float() + alpha * grey)


def blur(images: Tensor, severity: int, seed: int = 0) -> Tensor:
    """Gaussian blur, sigma 0.7 / 1.2 / 2.0 pixels (reflect padding)."""
    images = _check(images, severity, "blur")
    sigma = (0.7, 1.2, 2.0)[severity - 1]
    radius = int(np.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = taps / taps.sum()
    x = images.permute(0, 3, 1, 2).float().reshape(-1, 1, *images.shape[1:3])  # (N*3, 1, H, W)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), taps.view(1, 1, -1, 1))
    return _to_uint8(x.reshape(images.shape[0], 3, *images.shape[1:3]).permute(0, 2, 3, 1))


def noise(images: Tensor, severity: int, seed: int = 0) -> Tensor:
    """Additive Gaussian noise, std 12 / 25 / 45 grey levels, from a generator seeded by (seed, severity)."""
    images = _check(images, severity, "noise")
    std = (12.0, 25.0, 45.0)[severity - 1]
    generator = torch.Generator().manual_seed(seed * 10 + severity)
    return _to_uint8(images.float() + std * torch.randn(images.shape, generator=generator))


def jpeg(images: Tensor, severity: int, seed: int = 0) -> Tensor:
    """JPEG re-encoding at quality 20 / 10 / 5 (Pillow)."""
    from PIL import Image

    images = _check(images, severity, "jpeg")
    quality = (20, 10, 5)[severity - 1]
    out = []
    for image in images.numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out))


def sketch(images: Tensor, severity: int, seed: int = 0) -> Tensor:
    """Edge map ("sketch"): dark Sobel edges on white, blended over the greyscale image 50% / 75% / 100%."""
    images = _check(images, severity, "sketch")
    alpha = (0.5, 0.75, 1.0)[severity - 1]
    grey = _grey(images)[:, None]  # (N, 1, H, W)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, kx.view(1, 1, 3, 3)), F.conv2d(padded, kx.T.reshape(1, 1, 3, 3))
    magnitude = (gx**2 + gy**2).sqrt()
    scale = magnitude.flatten(1).quantile(0.95, dim=1).clamp(min=1e-6)[:, None, None, None]
    edges = 255.0 * (1 - (magnitude / scale).clamp(0, 1))  # (N, 1, H, W): white paper, dark strokes
    mixed = (1 - alpha) * grey + alpha * edges
    return _to_uint8(mixed[:, 0, :, :, None].expand(-1, -1, -1, 3))


def patch_grid(severity: int) -> int:
    """Patches per side for patch_shuffle: 2 / 4 / 8."""
    return (2, 4, 8)[severity - 1]


def patch_shuffle(images: Tensor, severity: int, seed: int = 0) -> Tensor:
    """Cut into a g x g grid (g = 2 / 4 / 8) and permute the patches, a seeded permutation per image."""
    images = _check(images, severity, "patch_shuffle")
    n, h, w, c = images.shape
    g = patch_grid(severity)
    if h % g or w % g:
        raise ValueError(f"shift patch_shuffle: image size {h}x{w} is not divisible by the {g}x{g} grid")
    ph, pw = h // g, w // g
    patches = images.reshape(n, g, ph, g, pw, c).permute(0, 1, 3, 2, 4, 5).reshape(n, g * g, ph, pw, c)
    generator = torch.Generator().manual_seed(seed * 10 + severity)
    order = torch.stack([torch.randperm(g * g, generator=generator) for _ in range(n)])  # (N, g*g)
    shuffled = patches[torch.arange(n)[:, None], order]
    return shuffled.reshape(n, g, g, ph, pw, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


SHIFTS: dict[str, Callable[[Tensor, int, int], Tensor]] = {
    "greyscale": greyscale,
    "blur": blur,
    "noise": noise,
    "jpeg": jpeg,
    "sketch": sketch,
    "patch_shuffle": patch_shuffle,
}


def apply_shift(name: str, images: Tensor, severity: int, seed: int = 0) -> Tensor:
    if name not in SHIFTS:
        raise ValueError(f"shift {name!r}: valid shifts are {', '.join(SHIFTS)}")
    return SHIFTS[name](images, severity, seed)
