"""CIFAR-10/100 in the python-pickle layout published on the CIFAR site, loaded without running code.

The batch files are pickles of dicts of numpy arrays, lists and bytes. `SafeUnpickler` resolves only the
globals numpy needs to rebuild arrays and refuses any other, so a tampered file cannot execute anything.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipforge.data.errors import DataSourceError

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    (
        "_codecs",
        "encode",
    ),  # protocol-2 pickles written by Python 3 rebuild bytes with it; it only encodes text
}

# (folder inside the archive, train files, test files, label key, meta file, class-name key)
_LAYOUTS = {
    10: (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        "batches.meta",
        "label_names",
    ),
    100: ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names"),
}


class SafeUnpickler(pickle.Unpickler):
    """Allows only numpy array/dtype/scalar reconstruction (and `_codecs.encode` for bytes); refuses the rest."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: CIFAR batches hold only numpy data"
            )
        return super().find_class(module, name)


def load_safe_pickle(data: bytes, source: str = "<bytes>") -> dict:
    """Unpickle one CIFAR batch (latin-1/bytes keys become str)."""
    try:
        batch = SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataSourceError(source, f"not a valid CIFAR python batch: {e}") from e
    if not isinstance(batch, dict):
        raise DataSourceError(source, f"expected a dict, got {type(batch).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


@dataclass
class ArrayImages:
    """Decoded images in memory: (N, H, W, 3) uint8 with (N,) int64 labels and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]


def _read_members(root: Path, names: list[str], folder: str) -> dict[str, bytes]:
    """Batch files from an extracted folder or straight out of `cifar-10-python.tar.gz`."""
    if root.is_file():
        wanted, found = {f"{folder}/{n}": n for n in names}, {}
        with tarfile.open(root, mode="r|*") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    found[wanted[member.name]] = tar.extractfile(member).read()
        missing = [n for n in names if n not in found]
        if missing:
            raise DataSourceError(root, f"archive lacks {folder}/{missing[0]}")
        return found
    base = root / folder if (root / folder).is_dir() else root
    out = {}
    for name in names:
        path = base / name
        if not path.is_file():
            raise DataSourceError(path, f"CIFAR batch file missing (expected {folder}/{name})")
        out[name] = path.read_bytes()
    return out


def load_cifar_python(root: str | Path, split: str = "train", num_classes: int = 10) -> ArrayImages:
    """CIFAR from `cifar-10-batches-py/` (or its parent, or the downloaded `.tar.gz`), as uint8 NHWC arrays."""
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r}; valid: train, test")
    if num_classes not in _LAYOUTS:
        raise ValueError(f"num_classes {num_classes}; valid: 10, 100")
    folder, train_files, test_files, label_key, meta, names_key = _LAYOUTS[num_classes]
    files = train_files if split == "train" else test_files
    members = _read_members(Path(root), files + [meta], folder)
    images, labels = [], []
    for name in files:
        batch = load_safe_pickle(members[name], f"{root}:{name}")
        for key in ("data", label_key):
            if key not in batch:
                raise DataSourceError(f"{root}:{name}", f"batch has keys {sorted(batch)}", field=key)
        data = np.asarray(batch["data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    names = load_safe_pickle(members[meta], f"{root}:{meta}")[names_key]
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return ArrayImages(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes)
