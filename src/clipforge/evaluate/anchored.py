"""Few-shot adaptation that does not fall below zero-shot: a probe anchored to the zero-shot classifier.

`fit_anchored_probe` (in the spirit of CLAP, Silva-Rodriguez et al. 2024, "A Closer Look at the Few-Shot
Adaptation of Large Vision-Language Models"): class weights start at the zero-shot prototypes and are pulled back
toward them by a per-class penalty. Its strength needs no held-out data: it is the zero-shot model's
(Laplace-smoothed) accuracy on that class's support examples — where zero-shot already works, stay near it;
where it fails, let the data move the class — divided by the class's number of shots, in logit units
(s^2 ||w_c - w0_c||^2, s = the model's logit scale). The summed cross-entropy grows with the shots while the
penalty shrinks, so one or two shots stay close to zero-shot and many shots move toward the plain probe.

`cache_adapter_logits` is the training-free Tip-Adapter-style baseline: zero-shot logits plus a blend of
similarities to the support examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AnchoredConfig:
    max_iter: int = 500
    tolerance_grad: float = 1e-6
    penalty_scale: float = 1.0  # multiplies the per-class strengths
    shots_power: float = 1.0  # penalty ~ 1 / shots_per_class**power


@dataclass
class AnchoredProbe:
    weight: Tensor  # (E, C)
    logit_scale: float
    class_strength: Tensor  # (C,) the per-class penalty strengths used

    def logits(self, image_features: Tensor) -> Tensor:  # (N, E) unit features -> (N, C)
        return self.logit_scale * image_features.float() @ self.weight


def class_strengths(
    support_features: Tensor, support_labels: Tensor, zeroshot_weights: Tensor, logit_scale: float
) -> Tensor:
    """(C,) zero-shot accuracy on each class's support examples, Laplace-smoothed: (hits + 1) / (n + 2).

    The smoothing keeps every class anchored (a class the zero-shot model misses on one shot still gets 1/3),
    so no weight can run off to fit a single example."""
    num_classes = zeroshot_weights.shape[1]
    labels = support_labels.long().cpu()
    predictions = (support_features.float() @ zeroshot_weights.float()).argmax(-1).cpu()  # (N,)
    hits = torch.zeros(num_classes).index_add_(0, labels, (predictions == labels).float())
    counts = torch.bincount(labels, minlength=num_classes).float()
    return ((hits + 1) / (counts + 2)).to(zeroshot_weights.device)


def fit_anchored_probe(
    support_features: Tensor,
    support_labels: Tensor,
    zeroshot_weights: Tensor,
    logit_scale: float,
    config: AnchoredConfig = AnchoredConfig(),
) -> AnchoredProbe:
    """Minimise sum_i CE(s x_i W, y_i) + sum_c s^2 lambda_c / n_c ||w_c - w0_c||^2 from W = W0 by L-BFGS.

    support_features: (N, E) unit image embeddings; zeroshot_weights: (E, C) unit columns; logit_scale: s."""
    x = support_features.float()
    y = support_labels.long().to(x.device)
    w0 = zeroshot_weights.float().to(x.device).contiguous()
    strength = config.penalty_scale * class_strengths(x, y, w0, logit_scale)  # (C,)
    # Penalty in logit units: s^2 ||w - w0||^2 is the scale of the logit change the move can cause.
    shots = torch.bincount(y.cpu(), minlength=w0.shape[1]).clamp(min=1).to(w0.device).float()  # (C,)
    penalty = strength * logit_scale**2 / shots**config.shots_power  # (C,)
    weight = w0.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight],
        max_iter=config.max_iter,
        tolerance_grad=config.tolerance_grad,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        ce = F.cross_entropy(logit_scale * x @ weight, y, reduction="sum")
        loss = ce + (penalty * (weight - w0).pow(2).sum(0)).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return AnchoredProbe(weight.detach(), float(logit_scale), strength.detach())


def cache_adapter_logits(
    query_features: Tensor,
    support_features: Tensor,
    support_labels: Tensor,
    zeroshot_weights: Tensor,
    logit_scale: float,
    alpha: float = 1.0,
    beta: float = 5.5,
) -> Tensor:
    """Training-free cache model: s x W0 + alpha * exp(-beta (1 - x . f_j)) @ onehot(y_j). -> (N, C)."""
    num_classes = zeroshot_weights.shape[1]
    q = query_features.float()
    affinity = torch.exp(-beta * (1.0 - q @ support_features.float().T))  # (N, K)
    onehot = F.one_hot(support_labels.long(), num_classes).float().to(q.device)  # (K, C)
    return logit_scale * q @ zeroshot_weights.float() + alpha * affinity @ onehot
