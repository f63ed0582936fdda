"""Few-shot: the zero-shot-anchored probe stays at or above zero-shot at 1-2 shots; the cache baseline by hand."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F

from clipforge.evaluate.anchored import (
    ZEROSHOT,
    AnchoredConfig,
    cache_adapter_logits,
    class_strengths,
    fit_anchored_probe,
    shot_folds,
)
from clipforge.evaluate.datasets import cifar
from clipforge.evaluate.features import extract_features
from clipforge.evaluate.fewshot import FewShotConfig, fewshot_curve, plot_fewshot, sample_shots
from clipforge.models import CLIP, get_config
from clipforge.transforms import image_transform


def accuracy(weights, x, y):
    return float(((x @ weights).argmax(-1) == y).float().mean())


def anchored_mean(x, y, xt, yt, w0, k, seeds=(0, 1, 2)):
    accs = []
    for seed in seeds:
        idx = sample_shots(y, k, seed)
        probe = fit_anchored_probe(x[idx], y[idx], w0, 100.0)
        accs.append(float((probe.logits(xt).argmax(-1) == yt).float().mean()))
    return statistics.fmean(accs)


@pytest.mark.parametrize(
    "sigma,tau",
    [
        pytest.param(1.0, 0.3, marks=pytest.mark.slow),
        pytest.param(1.0, 0.8, marks=pytest.mark.slow),
        (1.5, 0.5),
        (0.7, 1.5),
    ],
)
def test_anchored_not_below_zeroshot_on_clusters(sigma, tau):
    """20 Gaussian classes on the sphere; 'zero-shot' prototypes = class means plus noise (scale tau)."""
    g = torch.Generator().manual_seed(0)
    num_classes, dim = 20, 64
    mu = F.normalize(torch.randn(num_classes, dim, generator=g), dim=-1)

    def draw(per_class):
        y = torch.arange(num_classes).repeat_interleave(per_class)
        return F.normalize(mu[y] + 3 * sigma * torch.randn(len(y), dim, generator=g) / dim**0.5, dim=-1), y

    (x, y), (xt, yt) = draw(40), draw(200)
    w0 = F.normalize(
        mu + 3 * tau * torch.randn(num_classes, dim, generator=g) / dim**0.5, dim=-1
    ).T.contiguous()
    zeroshot = accuracy(w0, xt, yt)
    for k in (1, 2):
        assert anchored_mean(x, y, xt, yt, w0, k) >= zeroshot, k


def test_fewshot_curve_on_real_cifar_features(shared_data, tmp_path):
    """Real CIFAR-10 images through a random tiny ViT (centred, unit features); zero-shot prototypes from noisy
    class means of 1,000 train images kept apart from the few-shot pool; scored on the real test split."""
    torch.manual_seed(0)
    config = get_config("tiny-vit")
    model = CLIP(config).eval()
    transform = image_transform(config.preprocess)
    x, y = extract_features(model, cifar(shared_data / "cifar10", "train", transform), progress=False)
    xt, yt = extract_features(model, cifar(shared_data / "cifar10", "test", transform), progress=False)
    center = x.mean(0)
    x, xt = F.normalize(x - center, dim=-1), F.normalize(xt - center, dim=-1)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    pool, proto = perm[:2000], perm[2000:3000]
    means = torch.stack([x[proto][y[proto] == c].mean(0) for c in range(10)])
    noise = torch.randn(means.shape, generator=g) * means.norm(dim=1, keepdim=True) / means.shape[1] ** 0.5
    w0 = F.normalize(means + noise, dim=-1).T.contiguous()

    config = FewShotConfig(shots=(1, 2, 16), seeds=(0, 1, 2), methods=("linear_probe", "anchored", "cache"))
    result = fewshot_curve((x[pool], y[pool]), (xt, yt), w0, 100.0, config, progress=False)
    mean = {(r["method"], r["shots"]): r["acc1_mean"] for r in result["rows"]}
    zeroshot = result["zeroshot"]["acc1"]
    assert zeroshot > 0.15  # the prototypes carry signal (chance 0.10)
    # Random-network features barely separate the classes (1,000 test images resolve about +-1.3 points):
    # here the anchored probe must stay within one point of zero-shot and above the plain probe at 1-2 shots
    # (the clusters test above asserts >= zero-shot where the evaluation can resolve it).
    for k in (1, 2):
        assert mean["anchored", k] >= zeroshot - 0.01, (k, mean, zeroshot)
        assert mean["anchored", k] > mean["linear_probe", k], (k, mean)
    # At 16 shots the support set's one-standard-error rule may keep zero-shot on these weak features (the
    # plain probe also sees a second k-shot validation set): assert only that it never falls below zero-shot.
    assert mean["anchored", 16] >= zeroshot - 0.01, mean
    assert len(result["rows"]) == 9 and all(len(r["acc1_per_seed"]) == 3 for r in result["rows"])
    plot_fewshot(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000


def test_class_strengths_and_cache_by_hand():
    x = F.normalize(torch.tensor([[1.0, 0.1], [0.9, -0.2], [0.2, 1.0], [1.0, 0.3]]), dim=-1)
    y = torch.tensor([0, 0, 1, 1])
    w0 = torch.eye(2)
    # class 0: 2/2 right -> (2+1)/(2+2); class 1: 1/2 right -> (1+1)/(2+2)
    torch.testing.assert_close(class_strengths(x, y, w0, 100.0), torch.tensor([0.75, 0.5]))
    q = F.normalize(torch.tensor([[0.5, 0.5]]), dim=-1)
    expected = 100 * q @ w0 + torch.exp(-5.5 * (1 - q @ x.T)) @ F.one_hot(y, 2).float()
    torch.testing.assert_close(cache_adapter_logits(q, x, y, w0, 100.0), expected)


def test_shot_folds_and_strength_selection_by_hand():
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    torch.testing.assert_close(shot_folds(y, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
    torch.testing.assert_close(
        shot_folds(torch.tensor([2, 0, 1]), 4), torch.tensor([0, 1, 2])
    )  # one shot: LOO
    # Zero-shot prototypes that point at the wrong class: cross-validation must let the data move them.
    g = torch.Generator().manual_seed(0)
    mu = torch.eye(4)[:, :2].T  # two classes along e0, e1
    y = torch.arange(2).repeat(8)
    x = F.normalize(mu[y] + 0.1 * torch.randn(16, 4, generator=g), dim=-1)
    w0 = F.normalize(torch.tensor([[0.2, 1.0], [1.0, 0.2], [0.0, 0.0], [0.0, 0.0]]), dim=0)  # swapped
    probe = fit_anchored_probe(x, y, w0, 10.0)
    assert probe.penalty < ZEROSHOT and accuracy(probe.weight, x, y) == 1.0
    # A fixed penalty skips the search; a huge one stays at W0.
    fixed = fit_anchored_probe(x, y, w0, 10.0, AnchoredConfig(), penalty=1e6)
    assert fixed.cv_loss == {} and (fixed.weight - w0).abs().max() < 1e-3
