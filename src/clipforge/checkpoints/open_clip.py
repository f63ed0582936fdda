"""open_clip checkpoints: OpenAI's layout, possibly wrapped as a training checkpoint
({"state_dict": ..., "epoch": ...}) with DDP "module." / torch.compile "_orig_mod." prefixes, or
saved as `open_clip_model.safetensors`. Names are mapped by `clipforge.checkpoints.openai`.

open_clip files do not record the activation (nor head counts): pass `config` from the model name the file was
built with (`ViT-B-32` = GELU, `ViT-B-32-quickgelu` = QuickGELU, as in open_clip); without one, clipforge assumes
QuickGELU and warns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clipforge.checkpoints.io import is_safetensors, read_safetensors, save_safetensors, torch_load_safe
from clipforge.checkpoints.openai import (
    clipforge_to_openai,
    is_openai_layout,
    model_from_openai_state,
)
from clipforge.fileio import atomic_write
from clipforge.models import CLIP, CLIPConfig

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_state_dict(obj: Any, source: str | os.PathLike = "<object>") -> dict[str, Tensor]:
    """The bare OpenAI-layout state_dict inside an open_clip file's contents."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not (isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values())):
        raise ValueError(
            f"{source}: expected a state_dict or {{'state_dict': ...}}, got {type(obj).__name__}"
        )
    out = {}
    for key, value in obj.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def read_open_clip_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    obj = read_safetensors(path)[0] if is_safetensors(path) else torch_load_safe(path)
    return unwrap_state_dict(obj, path)


def load_open_clip(path: str | os.PathLike, config: CLIPConfig | None = None) -> CLIP:
    """A CLIP model from an open_clip checkpoint (plain, training-wrapped or safetensors)."""
    state_dict = read_open_clip_state_dict(path)
    if not is_openai_layout(state_dict):
        raise ValueError(f"{path}: not an open_clip CLIP state_dict; first keys: {list(state_dict)[:5]}")
    return model_from_openai_state(state_dict, config, path)


def save_open_clip(model: CLIP, path: str | os.PathLike) -> Path:
    """Save in open_clip's layout: `.safetensors` like `open_clip_model.safetensors`, otherwise a
    `torch.save` state_dict (what `open_clip.create_model(name, pretrained=path)` loads)."""
    state_dict = {k: v.detach().cpu() for k, v in clipforge_to_openai(model.state_dict()).items()}
    if Path(path).suffix == ".safetensors":
        return save_safetensors(path, state_dict, {"format": "pt"})
    return atomic_write(path, lambda f: torch.save(state_dict, f))
