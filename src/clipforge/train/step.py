"""One optimizer step's gradients, with exact contrastive gradient accumulation (GradCache).

With k micro-batches, a contrastive objective first embeds every micro-batch without autograd, computes the
loss over the whole batch of cached embeddings to get d(loss)/d(embedding), then re-embeds each micro-batch
with autograd and back-propagates those cached gradients. Activation memory is that of one micro-batch, the
gradient is the big batch's (every pair sees every other pair of the step as a negative).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

Backward = Callable[[Tensor], None]


def split_batch(batch: dict[str, Tensor], parts: int) -> list[dict[str, Tensor]]:
    size = len(batch["index"])
    if size % parts:
        raise ValueError(f"batch of {size} does not split into {parts} equal micro-batches")
    chunk = size // parts
    return [{k: v[i * chunk : (i + 1) * chunk] for k, v in batch.items()} for i in range(parts)]


def accumulate_gradients(
    objective: nn.Module,
    batch: dict[str, Tensor],
    accum_steps: int = 1,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    backward: Backward = torch.Tensor.backward,
) -> dict[str, Tensor]:
    """Adds the gradient of the objective's mean loss over `batch` to .grad; returns detached metrics.

    `backward(loss)` lets the caller scale the loss (fp16 GradScaler). Objectives without `embed` (per-sample
    losses) are accumulated as the mean of the micro-batch losses."""
    if accum_steps == 1:
        with autocast():
            out = objective.loss(batch)
        backward(out["loss"])
        return {k: v.detach() for k, v in out.items()}
    micro_batches = split_batch(batch, accum_steps)
    if not hasattr(objective, "embed"):
        totals: dict[str, Tensor] = {}
        for micro in micro_batches:
            with autocast():
                out = objective.loss(micro)
            backward(out["loss"] / accum_steps)
            for k, v in out.items():
                totals[k] = totals.get(k, 0) + v.detach() / accum_steps
        return totals
    return _grad_cache(objective, micro_batches, autocast, backward)


def _grad_cache(objective, micro_batches, autocast, backward) -> dict[str, Tensor]:
    with torch.no_grad(), autocast():
        cached = [objective.embed(micro) for micro in micro_batches]  # k x tuple of (b, E)
    leaves = [
        torch.cat(parts).detach().requires_grad_() for parts in zip(*cached, strict=True)
    ]  # (B, E) each
    with autocast():
        out = objective.loss_from_embeddings(*leaves)
    backward(
        out["loss"]
    )  # grads of the loss w.r.t. the cached embeddings (and loss-only params: logit_scale)
    sizes = [len(micro["index"]) for micro in micro_batches]
    grads = [leaf.grad.split(sizes) for leaf in leaves]
    for i, micro in enumerate(micro_batches):
        with autocast():
            embeddings = objective.embed(micro)
        torch.autograd.backward(embeddings, [g[i] for g in grads])
    return {k: v.detach() for k, v in out.items()}
