"""Peak bytes of the tensors a block of code creates: a dispatch-level tracking of live tensor storages.

`LiveTensorBytes` sees every aten op run in its context (forward, and the backward the autograd engine runs
for it), records each new output storage with a weak reference, and after every op sums the storages still
alive. `peak_bytes` is the largest such sum: the tensor memory the block needed beyond what existed before
it (inputs, parameters). Storages written in place (out=, add_) are not new and not counted. Memory a kernel
uses internally without a tensor (a collective's transport buffers) is not seen.
"""

from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveTensorBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current_bytes = 0
        self.peak_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {
            t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
        }
        out = func(*args, **kwargs)
        self._sweep()
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key not in inputs and key not in self.live:
                self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                self.current_bytes += storage.nbytes()
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        return out

    def _sweep(self) -> None:
        for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
            self.current_bytes -= self.live.pop(key)[1]
