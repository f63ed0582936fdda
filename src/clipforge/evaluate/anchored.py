"""Few-shot adaptation that does not fall below zero-shot: a probe anchored to the zero-shot classifier.

`fit_anchored_probe` (in the spirit of CLAP, Silva-Rodriguez et al., CVPR 2024): class weights start at the
zero-shot prototypes W0 and are pulled back toward them by a per-class penalty

    sum_i CE(s x_i W, y_i) + lambda * sum_c a_c s^2 ||w_c - w0_c||^2,

where s is the model's logit scale and a_c the zero-shot model's Laplace-smoothed accuracy on class c's support
examples (where zero-shot already works, stay near it; where it fails, let the data move the class). The one
global strength lambda is chosen by cross-validation *on the support set itself* (no held-out data): folds
hold out one shot of every class (at one shot: the only shot of a share of the classes), the candidates run from "infinite" (the
zero-shot classifier, no fit) down to 1e-4, the score is the held-out cross-entropy, and the one-standard-error
rule keeps the strongest penalty whose score is within one standard error of the best. With few shots the
error bars are wide and the rule stays at (or near) zero-shot; as shots accumulate they shrink and the
penalty is free to vanish, so the probe approaches a plain probe that starts from zero-shot.

Other few-shot baselines: `clipforge.evaluate.tip_adapter` (Tip-Adapter, -F) and
`clipforge.evaluate.prototype_probe` (ZS-LP, CLAP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from clipforge.evaluate.support import cross_validate, one_se_choice

ZEROSHOT = math.inf  # the candidate strength that means "keep the zero-shot classifier"


@dataclass(frozen=True)
class AnchoredConfig:
    max_iter: int = 300
    tolerance_grad: float = 1e-7
    strengths: tuple[float, ...] = (ZEROSHOT,) + tuple(10.0**e for e in range(4, -9, -1))  # strongest first
    max_folds: int = 4  # folds over shots (`clipforge.evaluate.support.shot_folds`)
    one_se_rule: bool = True


@dataclass
class AnchoredProbe:
    weight: Tensor  # (E, C)
    logit_scale: float
    class_strength: Tensor  # (C,) the per-class shape a_c
    penalty: float  # the chosen global strength lambda (inf = zero-shot)
    cv_loss: dict[float, tuple[float, float]] = field(default_factory=dict)  # lambda -> (mean CE, its SE)

    def logits(self, image_features: Tensor) -> Tensor:  # (N, E) unit features -> (N, C)
        return self.logit_scale * image_features.float() @ self.weight


def class_strengths(
    support_features: Tensor, support_labels: Tensor, zeroshot_weights: Tensor, logit_scale: float
) -> Tensor:
    """(C,) zero-shot accuracy on each class's support examples, Laplace-smoothed: (hits + 1) / (n + 2).

    The smoothing keeps every class anchored (a class the zero-shot model misses on one shot still gets 1/3)."""
    num_classes = zeroshot_weights.shape[1]
    labels = support_labels.long().cpu()
    predictions = (support_features.float() @ zeroshot_weights.float()).argmax(-1).cpu()  # (N,)
    hits = torch.zeros(num_classes).index_add_(0, labels, (predictions == labels).float())
    counts = torch.bincount(labels, minlength=num_classes).float()
    return ((hits + 1) / (counts + 2)).to(zeroshot_weights.device)


def fit_anchored_weights(
    x: Tensor,
    y: Tensor,
    w0: Tensor,
    logit_scale: float,
    penalty: Tensor,
    config: AnchoredConfig,
    init: Tensor | None = None,
) -> Tensor:
    """(E, C) minimiser of sum_i CE(s x_i W, y_i) + sum_c penalty_c s^2 ||w_c - w0_c||^2, by L-BFGS from
    `init` (default W0; the cross-validation walks the strengths from strong to weak, each fit warm-started
    from the previous one, as glmnet walks its lambda path)."""
    n, num_classes = len(y), w0.shape[1]
    onehot = F.one_hot(y, num_classes).to(x.dtype)  # (n, C)
    strength = penalty * logit_scale**2  # (C,)
    weight = (w0 if init is None else init).clone()
    optimizer = torch.optim.LBFGS(
        [weight], max_iter=config.max_iter, tolerance_grad=config.tolerance_grad,
        tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> Tensor:
        # Closed-form gradient; the objective is divided by n so L-BFGS's tolerances stay meaningful.
        log_probs = (logit_scale * x @ weight).log_softmax(-1)  # (n, C)
        delta = weight - w0  # (E, C)
        weight.grad = (logit_scale * x.T @ (log_probs.exp() - onehot) + 2 * strength * delta) / n
        return (-(log_probs * onehot).sum() + (strength * delta.pow(2).sum(0)).sum()) / n

    with torch.no_grad():
        optimizer.step(closure)
    return weight


def select_strength(
    x: Tensor, y: Tensor, w0: Tensor, logit_scale: float, shape: Tensor, config: AnchoredConfig
) -> tuple[float, dict[float, tuple[float, float]]]:
    """Cross-validate lambda over the support set; returns the choice and lambda -> (mean held-out CE, SE)."""

    def held_out_logits(kept, held, candidates):
        out, weight = [], w0
        for strength in candidates:  # strongest first: each fit starts from the previous one
            if strength != ZEROSHOT:
                weight = fit_anchored_weights(
                    x[kept], y[kept], w0, logit_scale, strength * shape, config, init=weight
                )
            out.append(logit_scale * x[held] @ weight)
        return out

    scores = cross_validate(y, list(config.strengths), held_out_logits, config.max_folds)
    table = {s: (h.mean_loss, h.loss_se) for s, h in scores.items()}
    if not config.one_se_rule:
        return min(scores, key=lambda s: scores[s].mean_loss), table
    return one_se_choice(scores), table


def fit_anchored_probe(
    support_features: Tensor,
    support_labels: Tensor,
    zeroshot_weights: Tensor,
    logit_scale: float,
    config: AnchoredConfig = AnchoredConfig(),
    penalty: float | None = None,
) -> AnchoredProbe:
    """Zero-shot-anchored probe on the support set. support_features: (N, E) unit image embeddings;
    zeroshot_weights: (E, C) unit columns; logit_scale: s. penalty: lambda, or None to cross-validate it."""
    x = support_features.float()
    y = support_labels.long().to(x.device)
    w0 = zeroshot_weights.float().to(x.device).contiguous()
    shape = class_strengths(x, y, w0, logit_scale)  # (C,)
    cv_loss: dict[float, tuple[float, float]] = {}
    if penalty is None:
        penalty, cv_loss = select_strength(x, y, w0, logit_scale, shape, config)
    weight = w0.clone()
    if penalty != ZEROSHOT:
        weight = fit_anchored_weights(x, y, w0, logit_scale, penalty * shape, config)
    return AnchoredProbe(weight, float(logit_scale), shape, float(penalty), cv_loss)
