"""Shift transforms: deterministic, shape/dtype preserving, and changing images as their docstrings say."""

from __future__ import annotations

import pytest
import torch

from clipforge.recipes.experiments.shifts import SEVERITIES, SHIFTS, apply_shift, patch_grid


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    smooth = torch.rand(6, 3, 8, 8, generator=generator)
    upsampled = torch.nn.functional.interpolate(smooth, size=32, mode="bilinear", align_corners=False)
    return (upsampled.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)  # (6, 32, 32, 3) with structure


@pytest.mark.parametrize("name", list(SHIFTS))
@pytest.mark.parametrize("severity", SEVERITIES)
def test_shift_is_deterministic_and_changes_images(images, name, severity):
    first = apply_shift(name, images, severity, seed=3)
    second = apply_shift(name, images.clone(), severity, seed=3)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, second)
    assert (first.float() - images.float()).abs().mean() > 1.0


@pytest.mark.parametrize("name", ["noise", "patch_shuffle"])
def test_random_shifts_depend_on_seed(images, name):
    assert not torch.equal(apply_shift(name, images, 2, seed=0), apply_shift(name, images, 2, seed=1))


def test_greyscale_full_has_equal_channels_and_mild_is_between(images):
    grey = apply_shift("greyscale", images, 3)
    assert torch.equal(grey[..., 0], grey[..., 1]) and torch.equal(grey[..., 1], grey[..., 2])
    spread = [(apply_shift("greyscale", images, s).float().std(dim=-1)).mean() for s in SEVERITIES]
    assert spread[0] > spread[1] > spread[2] == 0


def test_blur_removes_detail_more_at_higher_severity(images):
    def detail(x: torch.Tensor) -> float:
        return float((x[:, 1:].float() - x[:, :-1].float()).abs().mean())

    values = [detail(apply_shift("blur", images, s)) for s in SEVERITIES]
    assert detail(images) > values[0] > values[1] > values[2]


def test_noise_strength_grows_with_severity(images):
    errors = [(apply_shift("noise", images, s).float() - images.float()).std() for s in SEVERITIES]
    assert errors[0] < errors[1] < errors[2]
    assert 8 < errors[0] < 16  # std 12 grey levels before clipping to [0, 255]


def test_sketch_draws_dark_edges_on_white():
    square = torch.full((1, 32, 32, 3), 60, dtype=torch.uint8)
    square[:, 8:24, 8:24] = torch.tensor([200, 30, 90], dtype=torch.uint8)  # a coloured square on grey
    edges = apply_shift("sketch", square, 3)
    assert torch.equal(edges[..., 0], edges[..., 1]) and torch.equal(edges[..., 1], edges[..., 2])
    assert int(edges[0, 2, 2, 0]) == 255 and int(edges[0, 16, 16, 0]) == 255  # flat regions: white paper
    assert int(edges[0, 16, 8, 0]) < 50  # the square's border: a dark stroke


@pytest.mark.parametrize("severity", SEVERITIES)
def test_patch_shuffle_is_a_permutation_of_patches(images, severity):
    shuffled = apply_shift("patch_shuffle", images, severity, seed=5)
    g = patch_grid(severity)
    p = 32 // g

    def patches(x: torch.Tensor) -> torch.Tensor:  # (N, g*g, p*p*3)
        return x.reshape(len(x), g, p, g, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(len(x), g * g, -1)

    before, after = patches(images), patches(shuffled)
    for i in range(len(images)):
        match = (after[i][:, None] == before[i][None]).all(dim=-1)  # (g*g, g*g)
        assert match.any(dim=1).all() and match.any(dim=0).all()
    assert not torch.equal(shuffled, images)


def test_bad_arguments_name_what_is_valid(images):
    with pytest.raises(ValueError, match="severity 4 not in"):
        apply_shift("blur", images, 4)
    with pytest.raises(ValueError, match="valid shifts are"):
        apply_shift("fog", images, 1)
    with pytest.raises(ValueError, match="uint8"):
        apply_shift("blur", images.float(), 1)
