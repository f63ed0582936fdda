"""Bootstrap intervals: cover the estimate, shrink with more items, vanish for paired identical results."""

import torch

from clipforge.evaluate.metrics import bootstrap_ci


def test_interval_covers_the_mean_and_shrinks_with_more_items() -> None:
    widths = []
    for n in (100, 1600):
        hits = (torch.arange(n) % 10 < 6).float()  # 60% right
        low, high = bootstrap_ci(lambda i, h=hits: float(h[i].mean()), n, samples=500)
        assert low < 0.6 < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 4x narrower for 16x the items


def test_paired_difference_of_identical_results_is_zero() -> None:
    hits = (torch.rand(300, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    assert bootstrap_ci(lambda i: float(hits[i].mean() - hits[i].mean()), 300, samples=200) == (0.0, 0.0)


def test_same_seed_same_interval() -> None:
    hits = (torch.arange(200) % 3 == 0).float()
    stat = lambda i: float(hits[i].mean())  # noqa: E731
    assert bootstrap_ci(stat, 200, samples=300, seed=1) == bootstrap_ci(stat, 200, samples=300, seed=1)
