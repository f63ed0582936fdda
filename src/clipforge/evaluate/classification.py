"""Zero-shot accuracy on a labelled dataset: the head from clipforge.zeroshot, image embeddings, metrics."""

from __future__ import annotations

from torch import nn

from clipforge.evaluate.features import extract_features
from clipforge.evaluate.metrics import classification_metrics
from clipforge.zeroshot.classifier import build_classifier, zeroshot_logits


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
    cache_dir: str | bool | None = False,
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
    logits = zeroshot_logits(features, classifier, model.logit_scale.detach().exp(), class_groups)
    return {
        **classification_metrics(logits, labels),
        "num_samples": len(labels),
        "num_classes": logits.shape[1],
    }
