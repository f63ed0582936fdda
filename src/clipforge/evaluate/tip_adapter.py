"""Tip-Adapter and Tip-Adapter-F (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification", ECCV 2022): the zero-shot classifier plus a key-value cache of the support set.

    logits(x) = s x W0 + alpha (s / 100) exp(-beta (1 - x K^T)) L

K (M, E) holds the support image embeddings (the keys), L (M, C) their one-hot labels (the values), s the
model's logit scale. The paper writes the cache term for CLIP's scale s = 100; the factor s / 100 keeps its
alpha meaningful for a model with another learned temperature (alpha = 0 is the zero-shot classifier exactly).
Tip-Adapter is training-free; Tip-Adapter-F fine-tunes the keys by cross-entropy on the support set (AdamW,
lr 1e-3, 20 epochs of batches of 256, as in the paper), keys kept unit length.

The paper picks alpha and beta on a validation set; here they are chosen by cross-validation on the support
set alone (`clipforge.evaluate.support`): every fold's held-out shots query a cache built from the other
shots. With one shot per class that is impossible (a held-out image's class would be missing from the cache),
and the paper's defaults alpha = 1, beta = 5.5 are used. Tip-Adapter-F uses the training-free choice: re-running
the grid for every fine-tuned fold would cost the grid size times the training. The support features carry
no augmentation (the paper caches ten augmented views), so in fine-tuning an example's own key is masked out
of its cache term: its self-affinity exp(0) = 1 would otherwise teach nothing but "match yourself".
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

PAPER_ALPHA, PAPER_BETA = 1.0, 5.5


@dataclass(frozen=True)
class TipConfig:
    alphas: tuple[float, ...] = (
        0.0,
        0.25,
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
    )  # simplest (zero-shot) first
    betas: tuple[float, ...] = (0.5, 1.0, 2.0, 3.5, 5.5, 8.0, 12.0)
    max_folds: int = 4
    finetune_epochs: int = 20
    finetune_batch: int = 256
    finetune_lr: float = 1e-3
    finetune_weight_decay: float = 0.01  # torch's AdamW default, as the paper's optimiser


@dataclass
class TipAdapter:
    zeroshot_weights: Tensor  # (E, C)
    keys: Tensor  # (M, E) unit rows
    values: Tensor  # (M, C) one-hot
    logit_scale: float
    alpha: float
    beta: float
    cv: dict = field(default_factory=dict)  # "alpha,beta" -> held-out {accuracy, loss, loss_se}

    def logits(self, image_features: Tensor) -> Tensor:  # (N, E) unit features -> (N, C)
        return tip_logits(
            image_features,
            self.keys,
            self.values,
            self.zeroshot_weights,
            self.logit_scale,
            self.alpha,
            self.beta,
        )


def tip_logits(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    zeroshot_weights: Tensor,
    logit_scale: float,
    alpha: float,
    beta: float,
    self_mask: Tensor | None = None,
) -> Tensor:
    """(N, C) s q W0 + alpha (s/100) exp(-beta (1 - q K^T)) L. self_mask: (N, M) True where a query may not
    use a key (its own entry during fine-tuning)."""
    q = query.float()
    zeroshot = logit_scale * q @ zeroshot_weights.float()  # (N, C)
    if alpha == 0:
        return zeroshot
    affinity = torch.exp(-beta * (1.0 - q @ keys.float().T))  # (N, M)
    if self_mask is not None:
        affinity = affinity.masked_fill(self_mask, 0.0)
    return zeroshot + alpha * (logit_scale / 100.0) * affinity @ values.float()


def cache_values(labels: Tensor, num_classes: int) -> Tensor:
    return F.one_hot(labels.long(), num_classes).float()


def choose_alpha_beta(
    x: Tensor, y: Tensor, w0: Tensor, logit_scale: float, config: TipConfig
) -> tuple[float, float, dict]:
    """(alpha, beta, cv table) by cross-validation over the support set; the paper's defaults at one shot."""
    if not can_cross_validate(y):
        return PAPER_ALPHA, PAPER_BETA, {}
    values = cache_values(y, w0.shape[1])
    grid = [(a, b) for a in config.alphas for b in (config.betas if a else config.betas[:1])]

    def held_out_logits(kept, held, candidates):
        return [tip_logits(x[held], x[kept], values[kept], w0, logit_scale, a, b) for a, b in candidates]

    scores = cross_validate(y, grid, held_out_logits, config.max_folds)
    alpha, beta = best_by_accuracy(scores)
    return alpha, beta, score_table({f"{a:g},{b:g}": s for (a, b), s in scores.items()})


def fit_tip_adapter(
    support_features: Tensor,
    support_labels: Tensor,
    zeroshot_weights: Tensor,
    logit_scale: float,
    config: TipConfig = TipConfig(),
) -> TipAdapter:
    """Training-free Tip-Adapter with alpha, beta cross-validated on the support set."""
    x, y, w0 = support_tensors(support_features, support_labels, zeroshot_weights)
    alpha, beta, cv = choose_alpha_beta(x, y, w0, logit_scale, config)
    return TipAdapter(w0, x.clone(), cache_values(y, w0.shape[1]), float(logit_scale), alpha, beta, cv)


def finetune_keys(adapter: TipAdapter, x: Tensor, y: Tensor, config: TipConfig, seed: int = 0) -> Tensor:
    """(M, E) keys after Tip-Adapter-F's fine-tuning on the support set (x, y), own keys masked."""
    keys = adapter.keys.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([keys], lr=config.finetune_lr, weight_decay=config.finetune_weight_decay)
    steps_per_epoch = -(-len(y) // config.finetune_batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.finetune_epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(config.finetune_epochs):
        for batch in torch.randperm(len(y), generator=generator).split(config.finetune_batch):
            batch = batch.to(x.device)
            mask = F.one_hot(batch, len(y)).bool()  # (B, M): example i's own key is entry i
            logits = tip_logits(
                x[batch], F.normalize(keys, dim=-1), adapter.values, adapter.zeroshot_weights,
                adapter.logit_scale, adapter.alpha, adapter.beta, self_mask=mask,
            )  # fmt: skip
            loss = F.cross_entropy(logits, y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return F.normalize(keys.detach(), dim=-1)


def fit_tip_adapter_f(
    support_features: Tensor,
    support_labels: Tensor,
    zeroshot_weights: Tensor,
    logit_scale: float,
    config: TipConfig = TipConfig(),
    seed: int = 0,
) -> TipAdapter:
    """Tip-Adapter-F: the training-free adapter's alpha, beta, then keys fine-tuned on the support set."""
    adapter = fit_tip_adapter(support_features, support_labels, zeroshot_weights, logit_scale, config)
    if adapter.alpha == 0:  # the cache is switched off: nothing to fine-tune
        return adapter
    x, y, _ = support_tensors(support_features, support_labels, zeroshot_weights)
    with torch.enable_grad():
        adapter.keys = finetune_keys(adapter, x, y, config, seed)
    return adapter
