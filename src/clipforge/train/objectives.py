"""Training objectives: an nn.Module whose `loss(batch)` returns {"loss": Tensor, ...scalars}.

The loop trains any such module. An objective whose loss couples the samples of a batch (the contrastive
one: every other pair is a negative) also offers `embed(batch)` and `loss_from_embeddings(*embeddings)`, so
gradient accumulation can cache embeddings and still give the exact big-batch gradient (GradCache).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clipforge.train.loss import contrastive_loss


class ContrastiveObjective(nn.Module):
    """CLIP pretraining: symmetric InfoNCE between image and text embeddings with a learned temperature."""

    def __init__(
        self,
        model: nn.Module,
        *,
        local_loss: bool = False,
        gather_with_grad: bool = True,
        max_logit_scale: float = 100.0,
    ):
        super().__init__()
        self.model = model
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad
        self.max_log_scale = math.log(max_logit_scale)

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:  # -> (B, E), (B, E) unit rows
        image_features = self.model.encode_image(batch["images"], normalize=True)
        text_features = self.model.encode_text(batch["text"], normalize=True)
        return image_features, text_features

    def loss_from_embeddings(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        logit_scale = self.model.logit_scale.exp()
        loss = contrastive_loss(
            image_features.float(),
            text_features.float(),
            logit_scale,
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
        )
        return {"loss": loss, "logit_scale": logit_scale.detach()}

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.loss_from_embeddings(*self.embed(batch))

    @torch.no_grad()
    def after_step(self) -> None:
        """As in the paper: clip the log temperature so the logit multiplier never exceeds max_logit_scale."""
        self.model.logit_scale.clamp_(0, self.max_log_scale)
