"""torch.distributed plumbing: init from torchrun's environment, gather-with-grad, broadcasts and means.

Gradients are averaged by train/reducer.py (bucketed, overlapped with the step's last backward, no DDP
wrapper), which keeps the exact big-batch gradient with GradCache-style accumulation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from clipforge.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    created_group: bool = False  # True when init_distributed started the group (and must end it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK); single process otherwise.

    Backend: nccl when the device is CUDA, gloo on CPU. Each rank uses cuda:LOCAL_RANK on GPU machines."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda" and world_size > 1:
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    created = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        created = True
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world_size, local_rank, resolved, created)


def shutdown_distributed(info: DistInfo) -> None:
    if info.created_group and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world_size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for each slice and returns this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # (n, E) -> (world * n, E)
        rank, world_size = world()
        ctx.rank, ctx.world_size = rank, world_size
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(ctx.world_size)[ctx.rank]


def gather_features(features: Tensor, with_grad: bool = True) -> Tensor:
    """(n, E) per rank -> (world * n, E) in rank order. Every rank must pass the same n.

    with_grad: gradients flow back to the rank that produced each row (exact). Otherwise other ranks' rows are
    constants and only this rank's own rows carry gradient (cheaper, an approximation)."""
    rank, world_size = world()
    if world_size == 1:
        return features
    if with_grad:
        return _GatherWithGrad.apply(features)
    parts = [torch.empty_like(features) for _ in range(world_size)]
    dist.all_gather(parts, features.detach().contiguous())
    parts[rank] = features
    return torch.cat(parts)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Make every rank start from rank `src`'s parameters and buffers."""
    if world()[1] == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src)


def all_reduce_mean(value: Tensor) -> Tensor:
    """Mean of a tensor over ranks (a copy; the input is left unchanged)."""
    _, world_size = world()
    if world_size == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world_size


def gather_objects(obj) -> list:
    """Every rank's picklable `obj`, in rank order (a list of one without a process group)."""
    _, world_size = world()
    if world_size == 1:
        return [obj]
    out = [None] * world_size
    dist.all_gather_object(out, obj)
    return out
