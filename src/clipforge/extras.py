"""Optional dependencies: import one, or fail with the pip command that installs it."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# module -> (distribution on PyPI, clipforge extra that installs it)
OPTIONAL = {
    "matplotlib": ("matplotlib", "plots"),
    "faiss": ("faiss-cpu", "apps"),
    "fastapi": ("fastapi", "apps"),
    "uvicorn": ("uvicorn", "apps"),
    "onnx": ("onnx", "apps"),
    "onnxruntime": ("onnxruntime", "apps"),
    "openvino": ("openvino", "openvino"),
    "pyarrow": ("pyarrow", "apps"),
    "ahocorasick": ("pyahocorasick", "curate"),
    "torchvision": ("torchvision", "fast"),
    "tokenizers": ("tokenizers", "fast"),
    "tensorboard": ("tensorboard", "train"),
    "huggingface_hub": ("huggingface_hub", "hub"),
}


def installed(module: str) -> bool:
    """Whether `module` can be imported (found on the path; not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str, purpose: str) -> ModuleType:
    """`importlib.import_module(module)`, or MissingExtra naming `purpose` and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        dist, extra = OPTIONAL.get(top, (top, None))
        hint = f"pip install 'clipforge[{extra}]'" if extra else f"pip install {dist}"
        raise MissingExtra(f"{purpose} needs {dist}, which is not installed: {hint}") from error
