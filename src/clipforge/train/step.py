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
    before_last_backward: Callable[[], None] = lambda: None,
) -> dict[str, Tensor]:
    """Adds the gradient of the objective's mean loss over `batch` to .grad; returns detached metrics.

    `backward(loss)` lets the caller scale the loss (fp16 GradScaler). `before_last_backward()` runs just
    before the step's last backward pass (a gradient reducer arms its hooks there, so its all-reduce overlaps
    that pass). Objectives without `embed` (per-sample losses) are accumulated as the mean of the micro-batch
    losses."""
    if accum_steps == 1:
        with autocast():
            out = objective.loss(batch)
        before_last_backward()
        backward(out["loss"])
        return {k: v.detach() for k, v in out.items()}
    micro_batches = split_batch(batch, accum_steps)
    if not hasattr(objective, "embed"):
        totals: dict[str, Tensor] = {}
        for i, micro in enumerate(micro_batches):
            with autocast():
                out = objective.loss(micro)
            if i == len(micro_batches) - 1:
                before_last_backward()
            backward(out["loss"] / accum_steps)
            for k, v in out.items():
                totals[k] = totals.get(k, 0) + v.detach() / accum_steps
        return totals
    return _grad_cache(objective, micro_batches, autocast, backward, before_last_backward)


def _grad_cache(objective, micro_batches, autocast, backward, before_last_backward) -> dict[str, Tensor]:
    # The no-grad pass must not count twice: keep buffers (BatchNorm running stats) as they were, and replay
    # each micro-batch's RNG state in the recompute (dropout masks match).
    buffers = [b.detach().clone() for b in objective.buffers()]
    rng_states, cached = [], []  # cached: k x tuple of (b, E)
    with torch.no_grad(), autocast():
        for micro in micro_batches:
            rng_states.append(_rng_state())
            cached.append(objective.embed(micro))
    with torch.no_grad():
        for buffer, saved in zip(objective.buffers(), buffers, strict=True):
            buffer.copy_(saved)
    rng_after = _rng_state()
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
        _set_rng_state(rng_states[i])
        with autocast():
            embeddings = objective.embed(micro)
        if i == len(micro_batches) - 1:
            before_last_backward()
        torch.autograd.backward(embeddings, [g[i] for g in grads])
    _set_rng_state(rng_after)
    return {k: v.detach() for k, v in out.items()}


def _rng_state() -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None


def _set_rng_state(state: tuple[Tensor, Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])
