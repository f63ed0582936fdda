"""The paper's linear probe in torch: multinomial logistic regression by L-BFGS with a searched L2 strength.

Protocol (CLIP paper, appendix A.3): L2 strength lambda searched on a validation split carved from train over
1e-6..1e6 — every second decade first, then a binary refinement around the best value down to 8 steps per decade
(a 96-step log grid) — then refit on train+val and scored on test. The objective matches scikit-learn's
`LogisticRegression(C=1/lambda)`: sum of cross-entropies + lambda/2 * ||W||^2, bias not penalised.
Runs on whatever device the features are on (CPU or GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from clipforge.evaluate.metrics import classification_metrics
from clipforge.evaluate.support import can_cross_validate, fold_splits

STEPS_PER_DECADE = 8
LOG10_MIN, LOG10_MAX = -6, 6


@dataclass(frozen=True)
class ProbeConfig:
    max_iter: int = 1000
    val_fraction: float = 0.2
    steps_per_decade: int = STEPS_PER_DECADE
    log10_min: int = LOG10_MIN
    log10_max: int = LOG10_MAX
    tolerance_grad: float = 1e-6
    dtype: torch.dtype = torch.float32
    seed: int = 0


@dataclass
class LinearClassifier:
    weight: Tensor  # (D, C)
    bias: Tensor  # (C,)

    def logits(self, features: Tensor) -> Tensor:  # (N, D) -> (N, C)
        return features.to(self.weight.dtype) @ self.weight + self.bias


def fit_logistic_regression(
    features: Tensor,
    labels: Tensor,
    l2_lambda: float,
    num_classes: int | None = None,
    max_iter: int = 1000,
    tolerance_grad: float = 1e-6,
    init: LinearClassifier | None = None,
    dtype: torch.dtype = torch.float32,
) -> LinearClassifier:
    """Minimise sum_i CE(x_i W + b, y_i) + lambda/2 ||W||^2 with full-batch L-BFGS (strong Wolfe)."""
    x = features.to(dtype)
    y = labels.to(x.device).long()
    num_classes = num_classes or int(y.max()) + 1
    n, d = x.shape
    weight = torch.zeros(d, num_classes, dtype=dtype, device=x.device)
    bias = torch.zeros(num_classes, dtype=dtype, device=x.device)
    if init is not None:
        weight.copy_(init.weight)
        bias.copy_(init.bias)
    # Objective divided by n: same minimiser, gradients of order one for L-BFGS's tolerances.
    reg = l2_lambda / n
    onehot = F.one_hot(y, num_classes).to(dtype)  # (n, C)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tolerance_grad,
        tolerance_change=1e-9,
        history_size=10,  # scipy's L-BFGS-B default, as scikit-learn uses
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        # Closed-form gradient (no autograd graph): softmax(xW + b) - onehot, back through the linear map.
        logits = x @ weight + bias  # (n, C)
        log_probs = logits.log_softmax(dim=-1)
        loss = -(log_probs * onehot).sum() / n + 0.5 * reg * weight.pow(2).sum()
        residual = (log_probs.exp() - onehot) / n  # (n, C)
        weight.grad = x.T @ residual + reg * weight
        bias.grad = residual.sum(0)
        return loss

    with torch.no_grad():
        optimizer.step(closure)
    return LinearClassifier(weight, bias)


def lambda_grid(config: ProbeConfig = ProbeConfig()) -> list[float]:
    """The log grid 10^(min + i/steps) for i in 0..steps*(max-min); 96 steps over 1e-6..1e6 by default."""
    steps = config.steps_per_decade * (config.log10_max - config.log10_min)
    return [10 ** (config.log10_min + i / config.steps_per_decade) for i in range(steps + 1)]


def stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (train, val): per class, a `val_fraction` share (at least one if the class has two) to val."""
    generator = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    labels = labels.cpu()
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_val = min(len(idx) - 1, max(1, round(val_fraction * len(idx)))) if len(idx) > 1 else 0
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values


def accuracy(classifier: LinearClassifier, features: Tensor, labels: Tensor) -> float:
    predictions = classifier.logits(features).argmax(-1).cpu()
    return float((predictions == labels.cpu()).float().mean())


def binary_search_grid(score, size: int, steps_per_decade: int) -> int:
    """Index of the best grid point by the paper's parametric binary search: every second decade first,
    then halve the stride around the best so far. `score(i)` is called at most once per index; ties go to
    the larger index (the larger lambda: the simpler model)."""
    scores: dict[int, float] = {}

    def best_of(indices: list[int]) -> int:
        for i in indices:
            if i not in scores:
                scores[i] = score(i)
        return max(indices, key=lambda i: (scores[i], i))

    stride = 2 * steps_per_decade
    best = best_of(list(range(0, size, stride)))
    while stride > 1:
        stride //= 2
        best = best_of([j for j in (best - stride, best, best + stride) if 0 <= j < size])
    return best


def search_lambda(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    num_classes: int,
    config: ProbeConfig = ProbeConfig(),
    progress: bool = True,
) -> tuple[float, dict[float, float]]:
    """Parametric binary search for the best lambda on val; returns it and every (lambda -> val accuracy)."""
    grid = lambda_grid(config)
    scores: dict[int, float] = {}
    warm: dict[int, LinearClassifier] = {}
    bar = tqdm(desc="lambda search", disable=not progress, leave=False)

    def score(i: int) -> float:
        nearest = min(warm, key=lambda j: abs(j - i)) if warm else None
        clf = fit_logistic_regression(
            train_x, train_y, grid[i], num_classes, config.max_iter, config.tolerance_grad,
            init=warm.get(nearest), dtype=config.dtype,
        )  # fmt: skip
        warm[i] = clf
        scores[i] = accuracy(clf, val_x, val_y)
        bar.update(1)
        bar.set_postfix(lam=f"{grid[i]:.1e}", acc=f"{scores[i]:.4f}")
        return scores[i]

    best = binary_search_grid(score, len(grid), config.steps_per_decade)
    bar.close()
    return grid[best], {grid[i]: s for i, s in sorted(scores.items())}


def search_lambda_cv(
    x: Tensor, y: Tensor, num_classes: int, max_folds: int = 4, config: ProbeConfig = ProbeConfig()
) -> tuple[float, dict[float, float]]:
    """The same search scored by cross-validation on (x, y) alone: mean held-out accuracy over the shot
    folds of `clipforge.evaluate.support` (each fold warm-started from its nearest fit so far). For the
    few-shot curve, where the support set is all the labelled data a method may see. With one shot per class
    (nothing to hold out) it returns the largest lambda, whose fit ranks classes as the nearest class mean."""
    grid = lambda_grid(config)
    if not can_cross_validate(y):  # one shot: no fold keeps every class; the strongest lambda = class means
        return grid[-1], {}
    splits = list(fold_splits(y, max_folds))
    warm: list[dict[int, LinearClassifier]] = [{} for _ in splits]
    scores: dict[int, float] = {}

    def score(i: int) -> float:
        hits = 0
        for (kept, held), fits in zip(splits, warm, strict=True):
            nearest = min(fits, key=lambda j: abs(j - i)) if fits else None
            fits[i] = fit_logistic_regression(
                x[kept], y[kept], grid[i], num_classes, config.max_iter, config.tolerance_grad,
                init=fits.get(nearest), dtype=config.dtype,
            )  # fmt: skip
            hits += int((fits[i].logits(x[held]).argmax(-1) == y[held]).sum())
        scores[i] = hits / len(y)
        return scores[i]

    best = binary_search_grid(score, len(grid), config.steps_per_decade)
    return grid[best], {grid[i]: s for i, s in sorted(scores.items())}


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    config: ProbeConfig = ProbeConfig(),
    l2_lambda: float | None = None,
    val: tuple[Tensor, Tensor] | None = None,
    progress: bool = True,
) -> dict:
    """Search lambda on val (carved from train unless given), refit on train+val, score on test.

    Returns {"acc1", "acc5", "mean_per_class_recall", "lambda", "val_scores", "classifier"}."""
    num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    val_scores: dict[float, float] = {}
    if l2_lambda is None:
        if val is None:
            tr, va = stratified_split(train_y, config.val_fraction, config.seed)
            fit_x, fit_y, val_x, val_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
        else:
            fit_x, fit_y, (val_x, val_y) = train_x, train_y, val
        l2_lambda, val_scores = search_lambda(fit_x, fit_y, val_x, val_y, num_classes, config, progress)
    if val is not None:
        train_x, train_y = torch.cat([train_x, val[0].to(train_x)]), torch.cat([train_y, val[1].to(train_y)])
    classifier = fit_logistic_regression(
        train_x, train_y, l2_lambda, num_classes, config.max_iter, config.tolerance_grad, dtype=config.dtype
    )
    metrics = classification_metrics(classifier.logits(test_x).float().cpu(), test_y.cpu())
    return {
        **metrics,
        "lambda": l2_lambda,
        "log10_lambda": math.log10(l2_lambda),
        "val_scores": val_scores,
        "classifier": classifier,
    }
