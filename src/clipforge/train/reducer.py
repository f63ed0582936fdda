"""Gradient averaging over ranks that overlaps backward, with the gradients living inside the buckets.

Each parameter's `.grad` is a view into one of a few flat bucket buffers (~25 MB), so the all-reduce runs on
the buffers in place: no flattened copy of the gradients. Once `arm()` is called (before the step's last
backward), a hook after each parameter's gradient accumulation counts its bucket's ready parameters; buckets
are launched (asynchronous all-reduce) in index order as soon as they and all buckets before them are
complete, so every rank issues the same collectives in the same order while backward carries on. `finish()`
launches what is left: buckets holding a parameter that got no gradient in that backward (a loss-only
parameter such as the temperature, whose gradient came from an earlier backward of the step; a parameter
this batch did not use). Then it waits and divides by the world size.

Bucket membership follows the order gradients became ready in rank 0's first armed backward (as DDP rebuilds
its buckets after the first iteration), parameters that never showed up last; before that, reverse
parameter order. The earlier backward passes of a step (GradCache's loss pass and first micro-batches)
accumulate locally, as under DDP's `no_sync()`, so accumulation stays exact.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from clipforge.train.distributed import world

BUCKET_BYTES = 25 * 2**20  # DDP's default bucket_cap_mb


class _Bucket:
    def __init__(self, params: list[nn.Parameter]):
        self.params = params
        self.buffer = torch.zeros(
            sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device
        )
        self.views: list[Tensor] = []
        offset = 0
        for param in params:
            self.views.append(self.buffer[offset : offset + param.numel()].view_as(param))
            offset += param.numel()
        self.ready = 0
        self.work = None


def _split(params: list[nn.Parameter], bucket_bytes: int) -> list[_Bucket]:
    buckets, group = [], []
    for param in params:
        if group and (
            (param.dtype, param.device) != (group[0].dtype, group[0].device)
            or sum(p.numel() * p.element_size() for p in group) >= bucket_bytes
        ):
            buckets.append(_Bucket(group))
            group = []
        group.append(param)
    if group:
        buckets.append(_Bucket(group))
    return buckets


class GradientReducer:
    """Averages the gradients of `params` over the process group; see the module docstring.

    Per step: `prepare()` (after the optimizer's zero_grad: zeroes the buckets, re-attaches the views),
    backward passes, `arm()` before the last one, `finish()` after it."""

    def __init__(self, params: list[nn.Parameter], bucket_bytes: int = BUCKET_BYTES):
        self.params = [p for p in params if p.requires_grad]
        self.bucket_bytes = bucket_bytes
        self.buckets = _split(self.params[::-1], bucket_bytes)
        self._bucket_of: dict[int, int] = {}
        self._index_buckets()
        self._observed: list[int] | None = []  # parameter order of the first armed backward; None once used
        self._rebuild_pending = False
        self.armed = False
        self._next = 0  # the first bucket not launched yet
        self._handles = [
            param.register_post_accumulate_grad_hook(self._on_grad(i)) for i, param in enumerate(self.params)
        ]
        self.prepare()

    def _index_buckets(self) -> None:
        position = {id(p): i for i, p in enumerate(self.params)}
        self._bucket_of = {position[id(p)]: b for b, bucket in enumerate(self.buckets) for p in bucket.params}

    def _on_grad(self, index: int):
        def hook(param: nn.Parameter) -> None:
            if not self.armed:
                return
            if self._observed is not None:
                self._observed.append(index)
            bucket = self.buckets[self._bucket_of[index]]
            bucket.ready += 1
            self._launch_ready()

        return hook

    def _launch_ready(self) -> None:
        while self._next < len(self.buckets) and (
            self.buckets[self._next].ready == len(self.buckets[self._next].params)
        ):
            self._launch(self.buckets[self._next])
            self._next += 1

    def _launch(self, bucket: _Bucket) -> None:
        if world()[1] > 1:
            bucket.work = dist.all_reduce(bucket.buffer, async_op=True)

    def prepare(self) -> None:
        """Zero the gradients in place and make every `.grad` its bucket view again (an optimizer's
        zero_grad(set_to_none=True) or a checkpoint load may have replaced it)."""
        if self._rebuild_pending:
            self._rebuild()
        for bucket in self.buckets:
            bucket.buffer.zero_()
            bucket.ready, bucket.work = 0, None
            for param, view in zip(bucket.params, bucket.views, strict=True):
                param.grad = view
        self.armed, self._next = False, 0

    def arm(self) -> None:
        """The next backward is the step's last: reduce each bucket as soon as it is complete."""
        self.armed = True

    def finish(self) -> None:
        """Reduce what is left, wait for every bucket, divide by the world size."""
        _, world_size = world()
        for bucket in self.buckets:
            if not all(p.grad is v for p, v in zip(bucket.params, bucket.views, strict=True)):
                raise RuntimeError("a parameter's .grad was replaced during the step; call prepare() first")
        for bucket in self.buckets[self._next :]:
            self._launch(bucket)
        self._next = len(self.buckets)
        for bucket in self.buckets:
            if bucket.work is not None:
                bucket.work.wait()
            if world_size > 1:
                bucket.buffer.div_(world_size)
        self.armed = False
        if self._observed is not None:
            self._rebuild_pending = True

    def _rebuild(self) -> None:
        """Buckets in rank 0's observed gradient order (every rank uses the same)."""
        order = self._observed or []
        if world()[1] > 1:
            shared = [order]
            dist.broadcast_object_list(shared, src=0)
            order = shared[0]
        seen = set(order)
        order = list(dict.fromkeys(order)) + [i for i in range(len(self.params))[::-1] if i not in seen]
        self.buckets = _split([self.params[i] for i in order], self.bucket_bytes)
        self._index_buckets()
        self._observed, self._rebuild_pending = None, False

    def remove(self) -> None:
        """Detach the hooks (the gradients stay where they are)."""
        for handle in self._handles:
            handle.remove()
