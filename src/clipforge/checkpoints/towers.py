"""Pretrained unimodal towers into a CLIP: timm image trunks and Hugging Face text encoders from local files.

`load_image_tower(model, "efficientnet-lite0")` fills `model.visual.trunk` (kind="timm") from a timm or
efficientnet_pytorch state_dict file; `load_text_tower(model, "all-MiniLM-L6-v2")` fills
`model.text.transformer` (kind="hf") from a folder with `model.safetensors` (or `pytorch_model.bin`).
`hf_text_config(folder, ...)` makes the TextConfig that rebuilds that encoder offline. Names are resolved by
`clipforge.local_weights`. Projections stay as initialised: they are what LiT-style training learns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import Tensor, nn

from clipforge.checkpoints.efficientnet_pytorch import efficientnet_pytorch_to_timm, is_efficientnet_pytorch
from clipforge.checkpoints.io import check_state_dict, is_safetensors, read_safetensors, torch_load_safe
from clipforge.local_weights import resolve_weights
from clipforge.models.config import TextConfig

_WRAPPERS = ("module.", "_orig_mod.")
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a safetensors or (safely loaded) torch file, wrapper prefixes and {"state_dict"} removed."""
    path = Path(path)
    if is_safetensors(path):
        tensors, _ = read_safetensors(path)
    else:
        tensors = torch_load_safe(path)
        if isinstance(tensors, dict) and isinstance(tensors.get("state_dict"), dict):
            tensors = tensors["state_dict"]
    if not isinstance(tensors, dict) or not all(isinstance(v, Tensor) for v in tensors.values()):
        raise ValueError(f"{path}: not a state_dict (got {type(tensors).__name__})")
    out = {}
    for key, value in tensors.items():
        for prefix in _WRAPPERS:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _load_exact(
    module: nn.Module, tensors: dict[str, Tensor], source: Path, droppable: tuple[str, ...]
) -> None:
    """Load all of `module`'s tensors; file tensors the module lacks may only start with `droppable`."""
    expected = module.state_dict()
    check_state_dict(expected, tensors, source, type(module).__name__, droppable)
    module.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=False)


def load_image_tower(model: nn.Module, source: str | os.PathLike) -> Path:
    """Pretrained weights into `model.visual.trunk` (vision.kind='timm'); the ImageNet classifier is
    dropped when the tower has its own head. Returns the resolved file."""
    trunk = getattr(model.visual, "trunk", None)
    if trunk is None:
        raise ValueError(f"load_image_tower needs vision.kind='timm', got {model.config.vision.kind!r}")
    path = resolve_weights(source)
    tensors = read_state_dict(path)
    if is_efficientnet_pytorch(tensors):
        tensors = efficientnet_pytorch_to_timm(tensors, trunk)
    classifier = trunk.default_cfg.get("classifier", "classifier")
    head_names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    has_head = any(k.startswith(head_names) for k in trunk.state_dict())
    _load_exact(trunk, tensors, path, () if has_head else tuple(f"{h}." for h in head_names))
    return path


def hf_weight_file(folder: Path) -> Path:
    for name in _HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {' or '.join(_HF_WEIGHT_FILES)} (a Hugging Face model folder)")


def load_text_tower(model: nn.Module, source: str | os.PathLike) -> Path:
    """Pretrained weights into `model.text.transformer` (text.kind='hf'). Returns the resolved folder."""
    encoder = getattr(model.text, "transformer", None)
    if model.config.text.kind != "hf" or encoder is None:
        raise ValueError(f"load_text_tower needs text.kind='hf', got {model.config.text.kind!r}")
    folder = resolve_weights(source)
    tensors = read_state_dict(hf_weight_file(folder))
    prefix = f"{encoder.base_model_prefix}."
    if any(k.startswith(prefix) for k in tensors):  # saved from a task model (BertForMaskedLM, ...)
        tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    droppable = ("pooler.", "embeddings.position_ids")
    _load_exact(encoder, tensors, folder, droppable)
    return folder


def hf_text_config(
    source: str | os.PathLike,
    context_length: int = 77,
    pooler_type: str = "mean_pooler",
    proj_type: str = "linear",
) -> TextConfig:
    """The TextConfig of the encoder in `source` (a folder or local_weights name): its config.json is kept
    inside, the tokenizer is referenced by the same name."""
    folder = resolve_weights(source)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (a Hugging Face model folder)")
    data = json.loads(config_file.read_text(encoding="utf-8"))
    for key in (
        "_name_or_path",
        "transformers_version",
        "architectures",
        "gradient_checkpointing",
        "use_cache",
    ):
        data.pop(key, None)
    return TextConfig(
        context_length=context_length,
        vocab_size=int(data.get("vocab_size", 0)),
        width=int(data.get("hidden_size", 0)),
        heads=int(data.get("num_attention_heads", 1)),
        layers=int(data.get("num_hidden_layers", 0)),
        kind="hf",
        hf_model_name=str(source),
        hf_config_json=json.dumps(data, sort_keys=True, separators=(",", ":")),
        hf_tokenizer_name=str(source),
        hf_pooler_type=pooler_type,
        hf_proj_type=proj_type,
    )
