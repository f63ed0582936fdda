"""Linear probe: agrees with scikit-learn on real CIFAR-10 features; the lambda search follows the protocol."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from clipforge.evaluate.datasets import cifar
from clipforge.evaluate.features import extract_features
from clipforge.evaluate.linear_probe import (
    accuracy,
    fit_logistic_regression,
    lambda_grid,
    linear_probe,
    search_lambda,
    stratified_split,
)
from clipforge.evaluate.metrics import classification_metrics
from clipforge.models import CLIP, get_config
from clipforge.transforms import image_transform


@pytest.fixture(scope="module")
def cifar_features(shared_data):
    """Pre-projection features of real CIFAR-10 images (2,000 train, 1,000 test) from a random tiny ViT."""
    torch.manual_seed(0)
    config = get_config("tiny-vit")
    model = CLIP(config).eval()
    transform = image_transform(config.preprocess)
    train = cifar(shared_data / "cifar10", "train", transform)
    train.samples = train.samples[::5]  # 100 per class
    test = cifar(shared_data / "cifar10", "test", transform)
    return (
        extract_features(model, train, "pre-projection", progress=False),
        extract_features(model, test, "pre-projection", progress=False),
    )


@pytest.mark.parametrize("l2_lambda", [10.0, 1000.0])
def test_probe_matches_sklearn(cifar_features, l2_lambda):
    (x, y), (xt, yt) = cifar_features
    ours = accuracy(fit_logistic_regression(x, y, l2_lambda, 10), xt, yt)
    sk = LogisticRegression(C=1 / l2_lambda, solver="lbfgs", max_iter=1000).fit(x.numpy(), y.numpy())
    theirs = sk.score(xt.numpy(), yt.numpy())
    assert abs(ours - theirs) <= 0.005, (ours, theirs)
    assert ours > 0.2  # real signal: chance is 0.1


def test_search_protocol_and_refit(cifar_features):
    (x, y), (xt, yt) = cifar_features
    x, y = x[::2], y[::2]  # 50 per class keeps the 15 fits fast
    grid = lambda_grid()
    assert len(grid) == 97 and math.isclose(grid[0], 1e-6) and math.isclose(grid[-1], 1e6)
    assert math.isclose(grid[1] / grid[0], 10 ** (1 / 8))
    train_idx, val_idx = stratified_split(y, 0.2, seed=0)
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0 and len(val_idx) == 100
    best, scores = search_lambda(x[train_idx], y[train_idx], x[val_idx], y[val_idx], 10, progress=False)
    decades = [10.0**e for e in range(-6, 7, 2)]
    assert all(any(math.isclose(d, s) for s in scores) for d in decades)  # every second decade first
    assert len(scores) <= 7 + 2 * 4  # then a binary search to 1/8 decade
    assert scores[best] == max(scores.values())
    result = linear_probe(x, y, xt, yt, progress=False)
    assert result["lambda"] == best
    sk = LogisticRegression(C=1 / best, max_iter=1000).fit(x.numpy(), y.numpy())
    assert abs(result["acc1"] - sk.score(xt.numpy(), yt.numpy())) <= 0.005


def test_metrics_by_hand():
    logits = torch.tensor([[3.0, 2, 1, 0], [0, 3, 2, 1], [3, 0, 2, 1], [0, 1, 2, 3]])
    labels = torch.tensor([0, 2, 0, 1])
    m = classification_metrics(logits, labels)
    assert m["acc1"] == 0.5
    # per-class recall: class0 2/2, class1 0/1, class2 0/1 -> mean over present classes = 1/3
    assert math.isclose(m["mean_per_class_recall"], 1 / 3, rel_tol=1e-6)
    assert m["acc5"] == 1.0  # top-5 of 4 classes
