"""The sigmoid loss over ranks as a ring: texts travel to the next rank, gradients travel home with them.

Forward: each rank scores its n images against its own n texts (the matching pairs are on the diagonal),
then sends the texts it holds to rank + 1 and receives rank - 1's; after world_size - 1 exchanges it has seen
every rank's texts, all negatives. The next exchange is in flight while a block is scored. Nothing but the
inputs is kept for backward, so per-rank memory is one (n, n) block and a few (n, E) buffers whatever the
world size: the global batch is never materialised.

Backward recomputes the blocks in the same order. Each travelling text block carries a gradient buffer in
which every rank it visits adds d(its loss)/d(those texts); after a full circle one more exchange brings the
summed buffer home to the rank that produced the texts. Each rank returns the gradient of its own loss share
for its images, of all ranks' losses for its texts, and of its own share for the temperature and bias, so
averaging parameter gradients over ranks gives the single-process gradient of the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from clipforge.train.distributed import world


class _Exchange:
    """Tensors sent to rank + 1 while the same number are received from rank - 1 (non-blocking). Exchanges
    in flight at the same time use different tags."""

    def __init__(self, tensors: list[Tensor], tag: int = 0):
        rank, world_size = world()
        self.sent = [t.contiguous() for t in tensors]  # kept alive until the sends complete
        self.received = [torch.empty_like(t) for t in self.sent]
        right, left = (rank + 1) % world_size, (rank - 1) % world_size
        ops = [dist.P2POp(dist.isend, t, right, tag=tag + i) for i, t in enumerate(self.sent)]
        ops += [dist.P2POp(dist.irecv, t, left, tag=tag + i) for i, t in enumerate(self.received)]
        self.works = dist.batch_isend_irecv(ops)

    def wait(self) -> list[Tensor]:
        for work in self.works:
            work.wait()
        return self.received


def _block_loss(images: Tensor, texts: Tensor, scale: Tensor, bias: Tensor, positive: bool) -> Tensor:
    """sum_ij -log sigmoid(z_ij * logit_ij) over one (n, m) block; z = +1 on the diagonal when `positive`."""
    u = (images @ texts.T).mul_(scale).add_(bias)  # (n, m): -z * logit, as every z is -1 ...
    if positive:
        u.diagonal().neg_()  # ... except the matching pairs
    return F.softplus(u).sum()  # softplus(-z * logit) = -log sigmoid(z * logit)


def _block_backward(
    images: Tensor, texts: Tensor, scale: Tensor, bias: Tensor, positive: bool, coef: Tensor, grads: list
) -> None:
    """Adds coef * d(_block_loss) to grads = [images / scale (n, E), texts (m, E), bias ()] in place, with
    one (n, m) buffer. The image gradient is kept divided by the temperature: every block shares it, and
    d/d scale = sum_ij g_ij (x_i . y_j) = x . (sum over blocks of g @ y) is then one dot at the end."""
    u = (images @ texts.T).mul_(scale).add_(bias)  # (n, m)
    if positive:
        u.diagonal().neg_()
    g = u.sigmoid_()  # d softplus(u) / du, in place
    if positive:
        g.diagonal().neg_()  # d loss / d logit = -z * sigmoid(u)
    g.mul_(coef)
    grad_images, grad_texts, grad_bias = grads
    grad_bias.add_(g.sum())
    grad_images.addmm_(g, texts)
    grad_texts.addmm_(g.mul_(scale).T, images)  # d logit / d y_j = scale * x_i


class _RingSigmoidLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images: Tensor, texts: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
        _, world_size = world()
        ctx.save_for_backward(images, texts, scale, bias)
        total = images.new_zeros(())
        current = texts  # (n, E): this rank's texts, then rank - 1's, rank - 2's, ...
        for hop in range(world_size):
            pending = _Exchange([current]) if hop < world_size - 1 else None
            total += _block_loss(images, current, scale, bias, positive=hop == 0)
            if pending is not None:
                (current,) = pending.wait()
        return total / images.shape[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        images, texts, scale, bias = ctx.saved_tensors
        _, world_size = world()
        coef = grad_output / images.shape[0]
        grad_images = torch.zeros_like(images)  # divided by scale until the end
        grad_bias = torch.zeros_like(bias)
        current, grad_current = texts, torch.zeros_like(texts)  # grad_current travels with current
        for hop in range(world_size):
            pending = _Exchange([current], tag=1) if hop < world_size - 1 else None
            grads = [grad_images, grad_current, grad_bias]
            _block_backward(images, current, scale, bias, hop == 0, coef, grads)
            if pending is not None:
                (grad_current,) = _Exchange([grad_current], tag=2).wait()
                (current,) = pending.wait()
        if world_size > 1:  # the buffer now holds every rank's gradient for rank + 1's texts: send it home
            (grad_current,) = _Exchange([grad_current], tag=2).wait()
        grad_scale = torch.dot(images.reshape(-1), grad_images.view(-1))
        return grad_images.mul_(scale), grad_current, grad_scale, grad_bias


def ring_sigmoid_loss(images: Tensor, texts: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """This rank's sigmoid-loss share, sum over its n images x all ranks' texts / n, by neighbour exchange.

    images, texts: (n, E), the same n on every rank; scale, bias: () tensors. Without a process group: the
    single-process loss of the batch (with the memory of the recomputing backward)."""
    return _RingSigmoidLoss.apply(images, texts, scale, bias)
