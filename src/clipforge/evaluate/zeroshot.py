"""Zero-shot classification of a labelled dataset: prompt-ensembled classifier, then top-1/top-5/recall."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clipforge.evaluate.features import extract_features
from clipforge.evaluate.metrics import classification_metrics
from clipforge.zeroshot.classifier import build_classifier


def reduce_to_groups(logits: Tensor, class_groups: list[list[int]]) -> Tensor:
    """(N, 1000) ImageNet logits -> (N, G): each dataset class scores as its best ImageNet class."""
    return torch.stack([logits[:, group].max(dim=1).values for group in class_groups], dim=1)


def zeroshot_logits_for(
    image_features: Tensor,
    classifier: Tensor,
    logit_scale: float,
    class_groups: list[list[int]] | None = None,
) -> Tensor:
    logits = logit_scale * image_features.float() @ classifier.float().to(image_features.device)
    return reduce_to_groups(logits, class_groups) if class_groups is not None else logits


def evaluate_zeroshot(
    model: nn.Module,
    dataset,
    classnames: list[str],
    templates: list[str],
    *,
    class_groups: list[list[int]] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device=None,
    cache_dir=None,
    tokenizer=None,
    progress: bool = True,
) -> dict:
    """acc1, acc5, mean_per_class_recall of `model` on `dataset` ((image, label) items).

    With `class_groups`, `classnames` name the head's classes (e.g. ImageNet's 1,000) and each dataset label
    maps to a group of them (ObjectNet); otherwise label i is `classnames[i]`."""
    classifier = build_classifier(
        model, classnames, templates, tokenizer=tokenizer, batch_size=batch_size, device=device,
        cache_dir=cache_dir, progress=progress,
    )  # fmt: skip
    features, labels = extract_features(
        model, dataset, "embedding", batch_size=batch_size, num_workers=num_workers, device=device,
        progress=progress,
    )  # fmt: skip
    logits = zeroshot_logits_for(features, classifier, float(model.logit_scale.detach().exp()), class_groups)
    return {
        **classification_metrics(logits, labels),
        "num_samples": len(labels),
        "num_classes": logits.shape[1],
    }
