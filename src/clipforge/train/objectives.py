"""Training objectives: an nn.Module whose `loss(batch)` returns {"loss": Tensor, ...scalars}, and their registry.

The loop trains any such module. An objective whose loss couples the samples of a batch (the contrastive
one: every other pair is a negative) also offers `embed(batch)` and `loss_from_embeddings(*embeddings)`, so
gradient accumulation can cache embeddings and still give the exact big-batch gradient (GradCache).

`loss.objective` names an entry of the registry: `register_objective(name, factory)` adds one, where
`factory(model, train_data, loss_section) -> nn.Module`. The library registers "contrastive"; other code
(e.g. the paper's comparison objectives in clipforge.recipes.experiments) registers its own when imported, so
the trainer never imports research code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from clipforge.train.loss import contrastive_loss

if TYPE_CHECKING:
    from clipforge.train.config import LossSection

ObjectiveFactory = Callable[[nn.Module, Any, "LossSection"], nn.Module]
_REGISTRY: dict[str, ObjectiveFactory] = {}


def register_objective(name: str, factory: ObjectiveFactory) -> None:
    """Make `loss.objective=name` build `factory(model, train_data, loss_section)`; re-registering a name
    replaces it (a reloaded module)."""
    _REGISTRY[name] = factory


def objective_names() -> list[str]:
    return sorted(_REGISTRY)


def build_objective(name: str, model: nn.Module, train_data: Any, loss: LossSection) -> nn.Module:
    """The registered objective `name` around `model`; ValueError naming the registered ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(
            f"loss.objective={name!r} is not a registered objective; registered: {', '.join(objective_names())} "
            "(research objectives register when their module is imported, e.g. clipforge.recipes.experiments."
            "objectives; `clipforge train` imports it)"
        )
    return _REGISTRY[name](model, train_data, loss)


class ContrastiveObjective(nn.Module):
    """CLIP pretraining: symmetric InfoNCE between image and text embeddings with a learned temperature.

    `dedup_text`: encode each distinct caption of a batch once and gather the features back per pair (same
    loss and gradients; much cheaper when captions repeat, as template captions do: a batch of 512 CIFAR pairs
    holds at most 10 classes x 12 templates = 120 distinct rows)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        local_loss: bool = False,
        gather_with_grad: bool = True,
        max_logit_scale: float = 100.0,
        dedup_text: bool = False,
    ):
        super().__init__()
        self.model = model
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad
        self.max_log_scale = math.log(max_logit_scale)
        self.dedup_text = dedup_text

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:  # -> (B, E), (B, E) unit rows
        image_features = self.model.encode_image(batch["images"], normalize=True)
        if not self.dedup_text:
            return image_features, self.model.encode_text(batch["text"], normalize=True)
        unique_text, inverse = torch.unique(batch["text"], dim=0, return_inverse=True)  # (U, L), (B,)
        return image_features, self.model.encode_text(unique_text, normalize=True)[inverse]

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


def _contrastive(model: nn.Module, train_data: Any, loss: LossSection) -> nn.Module:
    return ContrastiveObjective(
        model,
        local_loss=loss.local_loss,
        gather_with_grad=loss.gather_with_grad,
        max_logit_scale=loss.max_logit_scale,
        dedup_text=loss.dedup_text,
    )


register_objective("contrastive", _contrastive)
