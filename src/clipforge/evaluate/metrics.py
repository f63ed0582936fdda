"""Classification metrics with LAION CLIP_benchmark's key names: acc1, acc5, mean_per_class_recall."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Share of rows whose label is among the k highest scores (k capped at the class count)."""
    k = min(k, logits.shape[1])
    topk = logits.topk(k, dim=1).indices  # (N, k)
    return float((topk == labels[:, None]).any(dim=1).float().mean())


def per_class_recall(logits: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """(C,) recall of each class; NaN for a class absent from `labels`."""
    num_classes = num_classes or logits.shape[1]
    predictions = logits.argmax(dim=1)
    hits = torch.zeros(num_classes).index_add_(0, labels, (predictions == labels).float())
    counts = torch.bincount(labels, minlength=num_classes).float()
    return torch.where(counts > 0, hits / counts.clamp(min=1), torch.full_like(hits, float("nan")))


def mean_per_class_recall(logits: Tensor, labels: Tensor) -> float:
    """Balanced accuracy: the mean over present classes of each class's recall."""
    recall = per_class_recall(logits, labels)
    return float(recall[~recall.isnan()].mean())


def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    logits, labels = logits.float().cpu(), labels.long().cpu()
    return {
        "acc1": topk_accuracy(logits, labels, 1),
        "acc5": topk_accuracy(logits, labels, 5),
        "mean_per_class_recall": mean_per_class_recall(logits, labels),
    }


def bootstrap_ci(
    statistic: Callable[[Tensor], float],
    n_items: int,
    samples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(index)` over test items resampled with replacement.
    Paired comparisons pass one index to every model/prompt set, so item difficulty cancels out."""
    generator = torch.Generator().manual_seed(seed)
    values = sorted(
        statistic(torch.randint(n_items, (n_items,), generator=generator)) for _ in range(samples)
    )
    tail = (1 - level) / 2
    return values[int(tail * (samples - 1))], values[int(round((1 - tail) * (samples - 1)))]
