"""CLIP's symmetric cross-entropy over the image-text similarity matrix, single- or multi-process."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clipforge.train.distributed import gather_features, world


def contrastive_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    *,
    local_loss: bool = False,
    gather_with_grad: bool = True,
) -> Tensor:
    """Mean of image->text and text->image cross-entropy; pair i matches pair i of the global batch.

    image_features, text_features: (n, E) unit-norm rows of this rank; logit_scale: () the multiplier exp(t).
    Under torch.distributed all ranks' rows are gathered, so the negatives come from the global batch of
    world * n pairs. `local_loss`: each rank computes only its own n rows of both matrices (memory n x N
    instead of N x N); with `gather_with_grad` both variants give exactly the single-process gradient once
    parameter gradients are averaged over ranks."""
    rank, world_size = world()
    n = image_features.shape[0]
    if world_size == 1:
        logits_per_image = logit_scale * image_features @ text_features.T  # (n, n)
        labels = torch.arange(n, device=image_features.device)
        return _symmetric_ce(logits_per_image, logits_per_image.T, labels)
    all_images = gather_features(image_features, gather_with_grad)  # (N, E)
    all_texts = gather_features(text_features, gather_with_grad)  # (N, E)
    if local_loss:
        logits_per_image = logit_scale * image_features @ all_texts.T  # (n, N)
        logits_per_text = logit_scale * text_features @ all_images.T  # (n, N)
        labels = torch.arange(n, device=image_features.device) + rank * n
        return _symmetric_ce(logits_per_image, logits_per_text, labels)
    logits_per_image = logit_scale * all_images @ all_texts.T  # (N, N)
    labels = torch.arange(world_size * n, device=image_features.device)
    return _symmetric_ce(logits_per_image, logits_per_image.T, labels)


def _symmetric_ce(logits_per_image: Tensor, logits_per_text: Tensor, labels: Tensor) -> Tensor:
    logits_per_image, logits_per_text = logits_per_image.float(), logits_per_text.float()
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
