"""clipforge: CLIP from scratch, exact to OpenAI's checkpoints, fast on what you have.

The public names are imported lazily (PEP 562), so `import clipforge.curate` or the CLI's start-up does not
pay for torch until a model is actually needed."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CLIP": "clipforge.models",
    "CLIPConfig": "clipforge.models",
    "CLIPOutput": "clipforge.models",
    "get_config": "clipforge.models",
    "create_model": "clipforge.factory",
    "create_model_and_transforms": "clipforge.factory",
    "list_models": "clipforge.factory",
    "load": "clipforge.factory",
    "load_model": "clipforge.factory",
    "image_transform": "clipforge.transforms",
    "open_image": "clipforge.decode",
}

if TYPE_CHECKING:
    from clipforge.decode import open_image
    from clipforge.factory import create_model, create_model_and_transforms, list_models, load, load_model
    from clipforge.models import CLIP, CLIPConfig, CLIPOutput, get_config
    from clipforge.transforms import image_transform


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clipforge' has no attribute {name!r}")


def tokenize(texts, context_length: int = 77, truncate: bool = False):
    """openai/CLIP's `tokenize`: (N, context_length) int64 ids, SOT/EOT added, zero-padded."""
    from clipforge.tokenizer import tokenize as _tokenize

    return _tokenize(texts, context_length=context_length, truncate=truncate)


def get_tokenizer(name=None):
    """The tokenizer for a model (a preset name, CLIPConfig or model): OpenAI's BPE, or an HF text tower's own
    tokenizer; callable like open_clip's."""
    from clipforge.tokenizer import get_tokenizer as _get

    return _get(name)


__all__ = [
    "CLIP",
    "CLIPConfig",
    "CLIPOutput",
    "create_model",
    "create_model_and_transforms",
    "get_config",
    "get_tokenizer",
    "image_transform",
    "list_models",
    "load",
    "load_model",
    "open_image",
    "tokenize",
]
