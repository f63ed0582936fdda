"""benchmarks.digit_reading's rendered digits: MNIST's geometry, seeded, and ten separable classes."""

import pytest
import torch

from benchmarks.digit_reading import FONT_DIR, mean_off_diagonal, render_digits

pytestmark = pytest.mark.skipif(not any(FONT_DIR.glob("*.ttf")), reason="needs the DejaVu fonts")


def test_rendered_digits_look_like_mnist_and_are_seeded():
    images, labels = render_digits(6, seed=0)
    assert images.shape == (60, 28, 28, 3) and images.dtype == torch.uint8
    assert labels.bincount().tolist() == [6] * 10
    gray = images[..., 0].float()
    assert torch.equal(images[..., 0], images[..., 2])  # gray in three channels
    ink = gray > 64
    rows, cols = ink.any(2), ink.any(1)  # (N, 28) each
    heights, widths = rows.sum(1), cols.sum(1)
    assert int(torch.maximum(heights, widths).max()) <= 23 and int(heights.min()) >= 14  # a ~20 px box
    assert float(gray[:, :2].mean()) < 1 and float(gray.mean()) > 10  # black border, white ink
    again, _ = render_digits(6, seed=0)
    other, _ = render_digits(6, seed=1)
    assert torch.equal(images, again) and not torch.equal(images, other)


def test_rendered_digit_classes_are_distinct():
    """Nearest class mean on raw pixels, fitted on one seed and scored on another, is far above chance."""
    images, labels = render_digits(20, seed=0)
    test, test_labels = render_digits(10, seed=1)
    flat = images[..., 0].flatten(1).float()
    means = torch.stack([flat[labels == c].mean(0) for c in range(10)])
    predicted = torch.cdist(test[..., 0].flatten(1).float(), means).argmin(1)
    assert float((predicted == test_labels).float().mean()) > 0.5


def test_mean_off_diagonal_cosine():
    eye = torch.eye(4)
    assert mean_off_diagonal(eye) == 0.0
    same = torch.nn.functional.normalize(torch.ones(4, 3), dim=0)
    assert mean_off_diagonal(same) == pytest.approx(1.0)
