"""Synthetic labelled images: noisy solid colours named by their colour, learnable in seconds (tests, smoke runs).

`synthetic_colours(n, size, classes, seed)` is a `LabelledArrays` like any decoded set, so it trains through the
same loader as real data, captioned "a photo of a {colour}." by a `PromptCaptioner`.
"""

from __future__ import annotations

import torch

from clipforge.data.labelled import LabelledArrays

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


def synthetic_colours(
    num_samples: int, image_size: int, num_classes: int = 10, seed: int = 0
) -> LabelledArrays:
    """(N, S, S, 3) uint8: sample i is 70% colour i % num_classes + 30% uniform noise; a pure function of the
    arguments (another `seed` gives other noise: a held-out set)."""
    if not 1 <= num_classes <= len(COLOR_NAMES):
        raise ValueError(f"data.num_classes must be in [1, {len(COLOR_NAMES)}], got {num_classes}")
    if num_samples < 1:
        raise ValueError(f"data.num_samples must be >= 1, got {num_samples}")
    labels = torch.arange(num_samples) % num_classes
    rgb = torch.tensor(COLOR_RGB[:num_classes])[labels].view(num_samples, 1, 1, 3)
    generator = torch.Generator().manual_seed(seed * 7_919 + 1)
    noise = torch.rand(num_samples, image_size, image_size, 3, generator=generator)
    images = ((0.7 * rgb + 0.3 * noise) * 255).round().to(torch.uint8)
    return LabelledArrays(images, labels, list(COLOR_NAMES[:num_classes]), source=f"synthetic:{seed}")
