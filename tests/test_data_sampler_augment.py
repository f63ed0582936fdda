"""Sampler resume/sharding and batched augmentation determinism (exact equalities)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipforge.data import AugmentConfig, EpochSampler, augment_batch, keyed_uniform
from clipforge.data.augment import pad_crop


def test_epoch_permutation_changes_per_epoch_and_is_seeded():
    a = EpochSampler(100, seed=3)
    first = a.indices().clone()
    a.set_epoch(1)
    assert not torch.equal(first, a.indices())
    assert sorted(first.tolist()) == list(range(100))
    assert torch.equal(first, EpochSampler(100, seed=3).indices())
    assert not torch.equal(first, EpochSampler(100, seed=4).indices())


@pytest.mark.parametrize("offset", [0, 1, 37, 99, 100])
def test_resume_at_offset_yields_exactly_the_remaining(offset):
    full = EpochSampler(100, seed=1)
    full.set_epoch(5)
    resumed = EpochSampler(100, seed=1)
    resumed.set_position(5, offset)
    assert resumed.indices().tolist() == full.indices().tolist()[offset:]
    assert len(resumed) == 100 - offset


def test_ranks_partition_the_epoch():
    parts = [EpochSampler(103, seed=0, rank=r, world_size=4).indices() for r in range(4)]
    assert all(len(p) == 25 for p in parts)  # 103 truncated to 100, equal per rank
    together = torch.cat(parts).tolist()
    assert len(set(together)) == 100


def test_batches_and_drop_last():
    s = EpochSampler(10, seed=0, batch_size=4, drop_last=True)
    assert [len(b) for b in s.batches()] == [4, 4]
    s = EpochSampler(10, seed=0, batch_size=4)
    assert [len(b) for b in s.batches()] == [4, 4, 2]
    with pytest.raises(ValueError, match="offset 11"):
        s.set_position(0, 11)


def test_keyed_uniform_is_a_pure_function_of_the_key():
    index = np.arange(1000)
    u = keyed_uniform(7, 2, index, 1)
    assert np.array_equal(u[500:], keyed_uniform(7, 2, index[500:], 1))  # independent of the batch
    assert not np.array_equal(u, keyed_uniform(7, 3, index, 1))
    assert not np.array_equal(u, keyed_uniform(7, 2, index, 2))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.03


@pytest.mark.parametrize("kind", ["crop_flip", "resized_crop_flip", "none"])
def test_augmentation_is_per_sample_deterministic(kind):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=generator)
    index = torch.arange(100, 108)
    config = AugmentConfig(kind=kind, image_size=32)
    whole = augment_batch(images, index, epoch=1, seed=0, config=config)
    halves = torch.cat([augment_batch(images[i : i + 4], index[i : i + 4], 1, 0, config) for i in (0, 4)])
    assert whole.shape == (8, 3, 32, 32) and whole.dtype == torch.float32
    assert torch.equal(whole, halves)
    if kind != "none":
        assert not torch.equal(whole, augment_batch(images, index, 2, 0, config))


def test_pad_crop_matches_slicing_and_flip_is_mirror():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = pad_crop(images, torch.tensor([0, 2]), torch.tensor([1, 2]), padding=1, mode="constant")
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    assert torch.equal(out[0], padded[0, :, 0:4, 1:5])
    assert torch.equal(out[1], padded[1, :, 2:6, 2:6])
    # with padding 0 and flip on, every output is the input or its mirror image (after normalisation undone)
    config = AugmentConfig(kind="crop_flip", padding=0, image_size=4, mean=(0, 0, 0), std=(1, 1, 1))
    raw = torch.randint(0, 256, (16, 4, 4, 3), dtype=torch.uint8)
    out = augment_batch(raw, torch.arange(16), 0, 0, config)
    plain = raw.permute(0, 3, 1, 2).float() / 255
    flipped = [torch.equal(o, p.flip(-1)) and not torch.equal(o, p) for o, p in zip(out, plain)]
    same = [torch.equal(o, p) for o, p in zip(out, plain)]
    assert all(f or s for f, s in zip(flipped, same)) and 2 <= sum(flipped) <= 14


def test_resized_crop_grid_equals_affine_grid_and_keeps_the_pixels():
    """The broadcast grid is affine_grid's; sampling before normalising gives the old order's values."""
    from clipforge.data.augment import (
        STREAM_FLIP,
        _axis_aligned_grid,
        _resized_crop_grid,
        normalize,
        to_float,
    )

    index = torch.arange(40, 72)
    config = AugmentConfig(kind="resized_crop_flip", image_size=24, scale=(0.3, 1.0))
    flips = keyed_uniform(3, 1, index, STREAM_FLIP) < 0.5
    theta = _resized_crop_grid(config, 3, 1, index, flips)
    reference = torch.nn.functional.affine_grid(theta, [32, 3, 24, 24], align_corners=False)
    torch.testing.assert_close(_axis_aligned_grid(theta, 24), reference, atol=1e-6, rtol=0)
    images = torch.randint(
        0, 256, (32, 40, 30, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    sampled = torch.nn.functional.grid_sample(
        to_float(images), reference, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    expected = normalize(sampled.contiguous(), config.mean, config.std)
    torch.testing.assert_close(augment_batch(images, index, 1, 3, config), expected, atol=1e-4, rtol=0)
