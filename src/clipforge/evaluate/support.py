"""Cross-validation on a k-shot support set: the only data a few-shot method may choose its settings on.

Folds hold out shots, never classes: fold j holds out the j-th shot of every class (at most `max_folds` folds;
with more shots than folds, shot ranks wrap around), so every training part keeps k - k/folds shots of each
class. With one shot per class no such fold exists -- holding out the only example of a class removes the class
from the training part -- so `can_cross_validate` is False and a method falls back to its published default
(the anchored probe still holds out single shots: its only risk there is staying at zero-shot).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def support_tensors(
    features: Tensor, labels: Tensor, zeroshot_weights: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(x (N, E) float, y (N,) long, W0 (E, C) float), all on the features' device: what every method fits on."""
    x = features.float()
    return x, labels.long().to(x.device), zeroshot_weights.float().to(x.device)


def shots_per_class(labels: Tensor) -> Tensor:
    """(C_present,) how many support examples each present class has."""
    return torch.bincount(labels.long().cpu())[labels.long().cpu().unique()]


def can_cross_validate(labels: Tensor) -> bool:
    """True when every class has at least two shots (a shot can be held out and the class still trained)."""
    return bool(shots_per_class(labels).min() >= 2)


def shot_folds(labels: Tensor, max_folds: int) -> Tensor:
    """(N,) fold id: an example's rank within its class modulo min(k, max_folds). With one shot per class
    the examples themselves are dealt into min(N, max_folds) folds (each fold holds out the only shot of a
    share of the classes)."""
    labels = labels.long().cpu()
    rank = torch.zeros(len(labels), dtype=torch.long)
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        rank[idx] = torch.arange(len(idx))
    shots = int(torch.bincount(labels).max())
    if shots == 1:
        return torch.arange(len(labels)) % min(len(labels), max_folds)
    return rank % min(shots, max_folds)


def fold_splits(labels: Tensor, max_folds: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(kept, held) boolean masks, one pair per fold of `shot_folds`."""
    folds = shot_folds(labels, max_folds).to(labels.device)
    for fold in folds.unique():
        yield folds != fold, folds == fold


@dataclass(frozen=True)
class HeldOut:
    """Held-out score of one candidate: accuracy and cross-entropy per held-out example."""

    correct: Tensor  # (N,) bool
    loss: Tensor  # (N,) cross-entropy

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    @property
    def mean_loss(self) -> float:
        return float(self.loss.mean())

    @property
    def loss_se(self) -> float:
        return float(self.loss.std() / math.sqrt(len(self.loss))) if len(self.loss) > 1 else math.inf


def held_out_score(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(correct (n,), cross-entropy (n,)) of held-out logits."""
    return logits.argmax(-1) == labels, F.cross_entropy(logits.float(), labels, reduction="none")


def cross_validate(
    labels: Tensor,
    candidates: Sequence,
    held_out_logits: Callable[[Tensor, Tensor, Sequence], list[Tensor]],
    max_folds: int,
) -> dict:
    """Score every candidate over the shot folds. `held_out_logits(kept, held, candidates)` returns one
    (n_held, C) logits tensor per candidate for the held-out examples (a method may share work across
    candidates, e.g. one optimisation trajectory for several step counts). Returns candidate -> HeldOut."""
    n = len(labels)
    correct = {c: torch.zeros(n, dtype=torch.bool, device=labels.device) for c in candidates}
    loss = {c: torch.zeros(n, device=labels.device) for c in candidates}
    for kept, held in fold_splits(labels, max_folds):
        for candidate, logits in zip(candidates, held_out_logits(kept, held, candidates), strict=True):
            hits, ce = held_out_score(logits, labels[held])
            correct[candidate][held], loss[candidate][held] = hits, ce
    return {c: HeldOut(correct[c], loss[c]) for c in candidates}


def best_by_accuracy(scores: dict) -> object:
    """The candidate with the highest held-out accuracy; ties go to the lower cross-entropy, then to the
    earlier candidate (candidates are listed simplest first)."""
    order = list(scores)
    return max(order, key=lambda c: (scores[c].accuracy, -scores[c].mean_loss, -order.index(c)))


def one_se_choice(scores: dict) -> object:
    """The one-standard-error rule (Breiman et al. 1984; glmnet's `lambda.1se`): the first (simplest)
    candidate whose mean held-out cross-entropy is within one standard error of the best one's."""
    best = min(scores, key=lambda c: scores[c].mean_loss)
    bound = scores[best].mean_loss + scores[best].loss_se
    return next(c for c in scores if scores[c].mean_loss <= bound)


def score_table(scores: dict) -> dict[str, dict[str, float]]:
    """JSON-ready candidate -> {accuracy, loss, loss_se}."""
    return {
        str(c): {"accuracy": s.accuracy, "loss": s.mean_loss, "loss_se": s.loss_se} for c, s in scores.items()
    }
