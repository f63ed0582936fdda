"""Read the weights of a TorchScript archive without running any of its code.

`torch.jit.load` compiles the archive's `code/` and may run `__setstate__` methods from it, so
we do not call it. The module tree lives in `<root>/data.pkl`: modules are pickled as
`__torch__.<Class>` objects whose state is a dict of attributes, tensors as
`torch._utils._rebuild_tensor_v2` over storages kept in `<root>/data/<key>`. We unpickle it with a
whitelist (those two kinds of objects, OrderedDict and the storage types) and walk the tree to
collect every tensor attribute under its dotted name — the names `state_dict()` would give.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clipforge.checkpoints.io import UnsafeCheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stand-in for a `__torch__.*` module: it only keeps its attribute dict."""

    class_name = ""
    attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.attributes = state


def _rebuild_tensor(storage: Tensor, offset: int, size, stride, requires_grad=False, hooks=None, *rest):
    return storage.as_strided(tuple(size), tuple(stride), offset)


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, root: str, path: Path):
        super().__init__(file)
        self.archive, self.root, self.path = archive, root, path
        self.storages: dict[str, Tensor] = {}
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            key = f"{module}.{name}"
            if key not in self.classes:  # a fresh plain class per name: NEWOBJ needs a type
                self.classes[key] = type(name, (_ScriptObject,), {"class_name": key})
            return self.classes[key]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise UnsafeCheckpointError(
            f"{self.path}: refusing to read TorchScript data: {module}.{name} is not a tensor, storage "
            "or module; reading it could run code"
        )

    def persistent_load(self, pid: Any) -> Tensor:
        kind, dtype, key = pid[0], pid[1], str(pid[2])
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise UnsafeCheckpointError(f"{self.path}: unexpected persistent id {pid!r} in data.pkl")
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.root}/data/{key}"))
            self.storages[key] = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _archive_root(archive: zipfile.ZipFile, path: Path) -> str:
    roots = [n[: -len("/data.pkl")] for n in archive.namelist() if n.endswith("/data.pkl")]
    if len(roots) != 1:
        raise ValueError(f"{path}: expected one <root>/data.pkl in the TorchScript archive, found {roots}")
    return roots[0]


def _collect(obj: _ScriptObject, prefix: str, out: dict[str, Tensor], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    for name, value in obj.attributes.items():
        if isinstance(value, Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{name}.", out, seen)


def read_torchscript_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Every tensor attribute of a TorchScript archive's module tree, by dotted name (CPU copies)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        root = _archive_root(archive, path)
        with archive.open(f"{root}/data.pkl") as f:
            top = _WeightsUnpickler(f, archive, root, path).load()
    if not isinstance(top, _ScriptObject):
        raise ValueError(f"{path}: data.pkl does not hold a TorchScript module")
    tensors: dict[str, Tensor] = {}
    _collect(top, "", tensors, set())
    return {name: tensor.clone() for name, tensor in tensors.items()}
