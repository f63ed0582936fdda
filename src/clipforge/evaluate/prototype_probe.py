"""Linear probes that start at the zero-shot prototypes: ZS-LP and CLAP (Silva-Rodriguez, Hajimiri, Ben Ayed
and Dolz, "A Closer Look at the Few-Shot Adaptation of Large Vision-Language Models", CVPR 2024; LP++ (Huang
et al., CVPR 2024) compares against the same zero-shot-initialised probe).

Both train class prototypes W (E, C), initialised at the zero-shot classifier W0, as a cosine classifier at
the model's temperature: logits = s x normalize(W). Training is full-batch Adam from W0.

- ZS-LP: cross-entropy only; its regulariser is the length of training (early stopping), chosen by
  cross-validation on the support set among `steps` (0 steps = zero-shot) -- each fold runs one trajectory and
  is scored at every candidate step count. With one shot per class no fold exists, and the CLAP paper's fixed
  budget (`default_steps`, 300 epochs there) is used.
- CLAP (class-adaptive linear probe): cross-entropy + (1/C) sum_c lambda_c ||w_c - w0_c||^2, where lambda_c is
  the zero-shot model's mean softmax probability of class c on class c's support images: classes the zero-shot
  classifier already gets right are held near their prototype. No validation and no search, by design (the
  paper's point): the multipliers stay at this initialisation, as in the paper's main "l2" setting (its
  augmented-Lagrangian updates are a variant). Trained for the same `default_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from clipforge.evaluate.support import (
    best_by_accuracy,
    can_cross_validate,
    cross_validate,
    score_table,
    support_tensors,
)


@dataclass(frozen=True)
class PrototypeProbeConfig:
    lr: float = 0.01
    steps: tuple[int, ...] = (0, 10, 30, 100, 300)  # ZS-LP's candidates, simplest first
    default_steps: int = 300
    max_folds: int = 4


@dataclass
class PrototypeProbe:
    weight: Tensor  # (E, C) unnormalised prototypes
    logit_scale: float
    steps: int
    penalty: Tensor | None = None  # (C,) CLAP's lambda_c
    cv: dict = field(default_factory=dict)

    def logits(self, image_features: Tensor) -> Tensor:  # (N, E) unit features -> (N, C)
        return cosine_logits(image_features, self.weight, self.logit_scale)


def cosine_logits(x: Tensor, weight: Tensor, logit_scale: float) -> Tensor:
    return logit_scale * x.float() @ F.normalize(weight, dim=0)


def clap_multipliers(x: Tensor, y: Tensor, w0: Tensor, logit_scale: float) -> Tensor:
    """(C,) lambda_c: mean zero-shot softmax probability of class c over class c's support images (0 for a
    class without support)."""
    probs = (logit_scale * x.float() @ w0.float()).softmax(-1)  # (N, C)
    num_classes = w0.shape[1]
    own = probs.gather(1, y[:, None]).squeeze(1)  # (N,)
    total = torch.zeros(num_classes, device=x.device).index_add_(0, y, own)
    counts = torch.bincount(y, minlength=num_classes).float()
    return total / counts.clamp(min=1)


def train_prototypes(
    x: Tensor,
    y: Tensor,
    w0: Tensor,
    logit_scale: float,
    lr: float,
    checkpoints: list[int],
    penalty: Tensor | None = None,
) -> list[Tensor]:
    """Prototypes after each step count in `checkpoints` (ascending) of full-batch Adam from W0 on
    CE(s x normalize(W), y) [+ (1/C) sum_c penalty_c ||w_c - w0_c||^2]."""
    weight = w0.clone().float().requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=lr)
    out, step = [], 0
    with torch.enable_grad():
        for target in checkpoints:
            while step < target:
                loss = F.cross_entropy(cosine_logits(x, weight, logit_scale), y)
                if penalty is not None:
                    loss = loss + (penalty * (weight - w0).pow(2).sum(0)).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
            out.append(weight.detach().clone())
    return out


def choose_steps(x: Tensor, y: Tensor, w0: Tensor, logit_scale: float, config) -> tuple[int, dict]:
    """ZS-LP's step count by cross-validation on the support set (the fixed default at one shot)."""
    if not can_cross_validate(y):
        return config.default_steps, {}

    def held_out_logits(kept, held, candidates):
        weights = train_prototypes(x[kept], y[kept], w0, logit_scale, config.lr, list(candidates))
        return [cosine_logits(x[held], w, logit_scale) for w in weights]

    scores = cross_validate(y, sorted(config.steps), held_out_logits, config.max_folds)
    return best_by_accuracy(scores), score_table(scores)


def fit_zs_lp(
    support_features: Tensor,
    support_labels: Tensor,
    zeroshot_weights: Tensor,
    logit_scale: float,
    config: PrototypeProbeConfig = PrototypeProbeConfig(),
) -> PrototypeProbe:
    """ZS-LP: the zero-shot-initialised cosine probe, early-stopped at a cross-validated step count."""
    x, y, w0 = support_tensors(support_features, support_labels, zeroshot_weights)
    steps, cv = choose_steps(x, y, w0, logit_scale, config)
    (weight,) = train_prototypes(x, y, w0, logit_scale, config.lr, [steps])
    return PrototypeProbe(weight, float(logit_scale), steps, cv=cv)


def fit_clap(
    support_features: Tensor,
    support_labels: Tensor,
    zeroshot_weights: Tensor,
    logit_scale: float,
    config: PrototypeProbeConfig = PrototypeProbeConfig(),
) -> PrototypeProbe:
    """CLAP: the zero-shot-initialised cosine probe with the class-adaptive penalty toward W0."""
    x, y, w0 = support_tensors(support_features, support_labels, zeroshot_weights)
    penalty = clap_multipliers(x, y, w0, logit_scale)
    (weight,) = train_prototypes(x, y, w0, logit_scale, config.lr, [config.default_steps], penalty)
    return PrototypeProbe(weight, float(logit_scale), config.default_steps, penalty=penalty)
