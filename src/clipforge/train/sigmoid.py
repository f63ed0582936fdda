"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023): every image-text pair is its own binary problem.

loss = -1/N * sum_ij log sigmoid(z_ij * (t * x_i . y_j + b)), z_ij = +1 for matching pairs, -1 otherwise,
over the N x N pairs of the global batch, with a learned temperature t = exp(t') and bias b (init t' = log 10,
b = -10: the many negatives start with a small loss). Unlike the softmax loss no row needs the whole row's
normaliser, so across ranks it can be computed block by block:

- `gather`: all-gather every rank's text features (with gradient) and score this rank's n images against all
  N texts (n x N logits; memory grows with world size);
- `ring`: texts travel round the ranks, one neighbour exchange at a time, and each rank scores its n images
  against one rank's n texts per step (n x n logits; memory constant in world size; see train/ring.py).

Both give each rank the loss of its own rows, sum / n; the mean over ranks is the global loss, and after the
loop averages parameter gradients over ranks the gradient equals the single-process one of the whole batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipforge.train.distributed import gather_features, world
from clipforge.train.objectives import ContrastiveObjective, register_objective
from clipforge.train.ring import ring_sigmoid_loss

SigmoidForm = Literal["gather", "ring"]
SIGMOID_FORMS: tuple[str, ...] = ("gather", "ring")
INIT_LOGIT_SCALE = math.log(10.0)  # the paper's t' (t = exp t' = 10)
INIT_LOGIT_BIAS = -10.0


def pair_labels(rows: int, columns: int, offset: int = 0, device: torch.device | None = None) -> Tensor:
    """(rows, columns) of -1 with +1 where column == row + offset: image i matches text offset + i."""
    labels = torch.full((rows, columns), -1.0, device=device)
    index = torch.arange(rows, device=device)
    labels[index, index + offset] = 1.0
    return labels


def sigmoid_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor,
    *,
    form: SigmoidForm = "ring",
) -> Tensor:
    """This rank's share of the sigmoid loss: -sum over its n image rows x all N texts of log sigmoid, / n.

    image_features, text_features: (n, E) rows of this rank (pair i matches pair i); logit_scale: () the
    multiplier t = exp(t'); logit_bias: () b. One process: the whole batch's loss. Computed in fp32 with
    autocast off (bias -10 and a 10x temperature leave little headroom in bf16)."""
    if form not in SIGMOID_FORMS:
        raise ValueError(f"sigmoid loss form must be one of {SIGMOID_FORMS}, got {form!r}")
    with torch.autocast(image_features.device.type, enabled=False):
        image_features, text_features = image_features.float(), text_features.float()
        logit_scale, logit_bias = logit_scale.float(), logit_bias.float()
        if form == "ring":
            return ring_sigmoid_loss(image_features, text_features, logit_scale, logit_bias)
        return _gathered_loss(image_features, text_features, logit_scale, logit_bias)


def _gathered_loss(image_features: Tensor, text_features: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    rank, _ = world()
    n = image_features.shape[0]
    all_texts = gather_features(text_features, with_grad=True)  # (N, E): gradients go home to each rank
    logits = scale * image_features @ all_texts.T + bias  # (n, N)
    labels = pair_labels(n, all_texts.shape[0], rank * n, image_features.device)
    return -F.logsigmoid(labels * logits).sum() / n


class SigmoidObjective(ContrastiveObjective):
    """SigLIP pretraining: the softmax objective's towers, step hook and embedding cache with the sigmoid loss.

    The temperature is the model's `logit_scale` (re-initialised to `init_logit_scale` unless that is None).
    The bias is the model's `logit_bias` when it has one (SigLIP presets: saved with the model; re-initialised
    to `init_logit_bias` unless that is None), else this objective's own parameter `logit_bias` (init
    `init_logit_bias`, None: -10), saved with the objective's state in training checkpoints."""

    def __init__(
        self,
        model: nn.Module,
        *,
        form: SigmoidForm = "ring",
        init_logit_scale: float | None = INIT_LOGIT_SCALE,
        init_logit_bias: float | None = INIT_LOGIT_BIAS,
        max_logit_scale: float = 100.0,
    ):
        super().__init__(model, max_logit_scale=max_logit_scale)
        if form not in SIGMOID_FORMS:
            raise ValueError(f"sigmoid loss form must be one of {SIGMOID_FORMS}, got {form!r}")
        self.form = form
        if init_logit_scale is not None:
            with torch.no_grad():
                model.logit_scale.fill_(init_logit_scale)
        self.logit_bias: nn.Parameter | None = None  # None: the model's own
        if getattr(model, "logit_bias", None) is None:
            init = INIT_LOGIT_BIAS if init_logit_bias is None else float(init_logit_bias)
            self.logit_bias = nn.Parameter(torch.tensor(init, device=model.logit_scale.device))
        elif init_logit_bias is not None:
            with torch.no_grad():
                model.logit_bias.fill_(init_logit_bias)

    def bias(self) -> Tensor:
        """() the learned bias b: the model's `logit_bias` if it has one, else the objective's."""
        return self.model.logit_bias if self.logit_bias is None else self.logit_bias

    def loss_from_embeddings(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        logit_scale, bias = self.model.logit_scale.exp(), self.bias()
        loss = sigmoid_loss(image_features, text_features, logit_scale, bias, form=self.form)
        return {"loss": loss, "logit_scale": logit_scale.detach(), "logit_bias": bias.detach()}


def _sigmoid(model: nn.Module, train_data, loss) -> nn.Module:
    return SigmoidObjective(
        model,
        form=loss.sigmoid_form,
        init_logit_scale=loss.sigmoid_init_logit_scale,
        init_logit_bias=loss.sigmoid_init_logit_bias,
        max_logit_scale=loss.max_logit_scale,
    )


register_objective("sigmoid", _sigmoid)
