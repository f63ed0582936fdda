"""Checkpoints: safe loading, clipforge's own format, OpenAI / open_clip / HF converters, downloads.

Front door: `load_any(path)` (auto-detects the format), `load_pretrained(name, tag_or_path)`,
`load_hub("hf-hub:org/name[@revision]")`, `save(model, path, fmt)`, and for training code
`save_checkpoint` / `load_checkpoint` / `load_model_file`.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from clipforge.checkpoints.download import cache_dir, download, offline_mode
from clipforge.checkpoints.io import (
    Checkpoint,
    UnsafeCheckpointError,
    checkpoint_from_object,
    is_safetensors,
    is_torchscript,
    load_checkpoint,
    load_model_file,
    read_safetensors_header,
    save_checkpoint,
    torch_load_safe,
)
from clipforge.checkpoints.registry import (
    PretrainedEntry,
    canonical_name,
    find_pretrained,
    get_pretrained,
    list_pretrained,
    tags_for,
)
from clipforge.models import CLIP, PRESETS, CLIPConfig, get_config
from clipforge.models.config import ALIASES

FORMATS = ("clipforge", "openai", "open_clip", "hf")

__all__ = [
    "FORMATS",
    "Checkpoint",
    "UnsafeCheckpointError",
    "cache_dir",
    "detect_format",
    "download",
    "get_pretrained",
    "list_pretrained",
    "load_any",
    "load_checkpoint",
    "load_hub",
    "load_model_file",
    "load_pretrained",
    "offline_mode",
    "save",
    "save_checkpoint",
]


def detect_format(path: str | os.PathLike) -> str:
    """One of 'clipforge', 'openai-torchscript', 'openai' (a bare OpenAI-layout state_dict pickle, which
    open_clip also writes), 'open_clip' (a {"state_dict": ...} training checkpoint, "module."-prefixed
    names, or OpenAI-layout safetensors) or 'hf' (a directory). Both 'openai' and 'open_clip' load the
    same way."""
    path = Path(path)
    if path.is_dir():
        from clipforge.checkpoints.hf import is_hf_dir

        if is_hf_dir(path):
            return "hf"
        raise ValueError(f"{path}: a directory but not an HF CLIP model (config.json with model_type 'clip')")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file or directory")
    if is_torchscript(path):
        return "openai-torchscript"
    if is_safetensors(path):
        keys, metadata = read_safetensors_header(path)
        return _classify(path, dict.fromkeys(keys), metadata.get("format") == "clipforge", wrapped=True)
    obj = torch_load_safe(path)
    if checkpoint_from_object(path, obj) is not None:
        return "clipforge"
    wrapped = isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict)
    return _classify(path, obj["state_dict"] if wrapped else obj, False, wrapped)


def _classify(path: Path, tensors, is_clipforge: bool, wrapped: bool) -> str:
    if is_clipforge:
        return "clipforge"
    if not isinstance(tensors, dict):
        raise ValueError(f"{path}: holds a {type(tensors).__name__}, not a state_dict or checkpoint")
    keys = {k.removeprefix("module.").removeprefix("_orig_mod.") for k in tensors}
    if "text_projection" in keys and "token_embedding.weight" in keys:
        has_prefix = any(k.startswith(("module.", "_orig_mod.")) for k in tensors)
        timm_tower = any(k.startswith("visual.trunk.") for k in keys)  # open_clip's TimmModel, never OpenAI's
        return "open_clip" if wrapped or has_prefix or timm_tower else "openai"
    if "text.token_embedding.weight" in keys and any(
        k.startswith("text.transformer.resblocks.") for k in keys
    ):
        return "open_clip"  # CustomTextCLIP's layout (SigLIP, ...)
    from clipforge.checkpoints.open_clip import is_hf_text_layout

    if is_hf_text_layout(dict.fromkeys(keys)):
        return "open_clip"  # CustomTextCLIP with a Hugging Face text tower (roberta-ViT-B-32, nllb-clip-*)
    if "text.token_embedding.weight" in keys:
        raise ValueError(f"{path}: a clipforge state_dict without its config; save with save_checkpoint")
    if any(k.startswith("text_model.") for k in keys):
        raise ValueError(f"{path}: HF CLIPModel weights; load the directory holding it and config.json")
    raise ValueError(f"{path}: unrecognised checkpoint (first keys: {sorted(keys)[:5]})")


def load_any(
    path: str | os.PathLike, config: CLIPConfig | str | None = None, dtype: torch.dtype | None = torch.float32
) -> CLIP:
    """A CLIP model (eval mode, CPU) from any supported checkpoint, format auto-detected.

    `config` (a preset name or CLIPConfig) overrides shape inference for OpenAI / open_clip files;
    clipforge and HF files carry their own config. `dtype=None` keeps the file's dtype (OpenAI's
    files are fp16); the default casts to fp32."""
    if isinstance(config, str):
        config = get_config(config)
    fmt = detect_format(path)
    if fmt == "clipforge":
        model = load_model_file(path)
    elif fmt == "hf":
        from clipforge.checkpoints.hf import load_hf

        model = load_hf(path)
    elif fmt == "open_clip":
        from clipforge.checkpoints.open_clip import load_open_clip

        model = load_open_clip(path, config)
    else:
        from clipforge.checkpoints.openai import load_openai

        model = load_openai(path, config)
    return model.to(dtype) if dtype is not None else model


def load_pretrained(
    name_or_config: str | CLIPConfig, tag_or_path: str | os.PathLike, offline: bool | None = None
) -> CLIP:
    """Weights for a model: a registry tag (see `list_pretrained`: every open_clip pair; downloaded into the
    cache, SHA256-checked) or a checkpoint path (any format; the name/config is used where the file does not
    record one). A tag's activation and preprocessing win over the preset's, as in open_clip."""
    if Path(tag_or_path).exists():
        config = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
        return load_any(tag_or_path, config)
    name = name_or_config if isinstance(name_or_config, str) else None
    entry = find_pretrained(name, str(tag_or_path)) if name else None
    if entry is None:
        tags = tags_for(name) if name else []
        raise FileNotFoundError(
            f"{tag_or_path}: neither a checkpoint path nor a pretrained tag for {name or 'a config'} "
            f"(tags: {', '.join(tags) or 'none'})"
        )
    if ALIASES.get(name, name) not in PRESETS:
        from clipforge.models.zoo_specs import OPEN_CLIP_UNSUPPORTED

        reason = OPEN_CLIP_UNSUPPORTED.get(ALIASES.get(name, name), "no preset for it")
        raise KeyError(
            f"{name}:{entry.tag} is an open_clip pretrained pair, but clipforge cannot build the "
            f"{name!r} architecture yet: {reason}"
        )
    config = _with_weights_preprocess(_with_weights_activation(get_config(name), entry, name), entry)
    return load_any(fetch_pretrained(entry, offline), config)


def fetch_pretrained(entry: PretrainedEntry, offline: bool | None = None) -> Path:
    """The local file of a registry entry's weights: its URL when a SHA256 is published for it (clipforge's
    cache), else its Hub repo (huggingface_hub's cache, SHA256 of the LFS file checked)."""
    if entry.source == "url":
        return download(entry.url, entry.sha256, offline=offline)
    if entry.source == "hf_hub":
        from clipforge.checkpoints.hub import HubRepo, hub_file, weight_candidates

        return hub_file(HubRepo(entry.hf_hub), weight_candidates(entry.hf_file), offline)
    raise FileNotFoundError(f"{entry.model}:{entry.tag}: the registry gives no URL or Hub repo for it")


def _with_weights_preprocess(config: CLIPConfig, entry: PretrainedEntry) -> CLIPConfig:
    """The weights' preprocessing (mean, std, interpolation, resize mode) at the model's image size."""
    if entry.preprocess is None:
        return config
    return replace(config, preprocess=replace(entry.preprocess, image_size=config.vision.image_size))


def load_hub(spec: str, offline: bool | None = None) -> CLIP:
    """A model from a Hub repo, 'hf-hub:org/name' or 'hf-hub:org/name@revision' (see checkpoints/hub.py):
    open_clip's layout (its open_clip_config.json gives the architecture, checked before the weights are
    fetched) or a transformers folder."""
    from clipforge.checkpoints.hub import (
        OPEN_CLIP_CONFIG,
        OPEN_CLIP_WEIGHTS,
        fetch_hf_folder,
        fetch_hub_config,
        hub_file,
    )
    from clipforge.checkpoints.open_clip_config import config_from_open_clip

    repo, config_file = fetch_hub_config(spec, offline)
    if config_file.name != OPEN_CLIP_CONFIG:
        fetch_hf_folder(repo, offline)
        return load_any(config_file.parent)
    config = config_from_open_clip(json.loads(config_file.read_text()), f"{spec}/{OPEN_CLIP_CONFIG}")
    return load_any(hub_file(repo, OPEN_CLIP_WEIGHTS, offline), config)


def _with_weights_activation(config: CLIPConfig, entry, name: str) -> CLIPConfig:
    """The weights' own activation wins: a GELU model with QuickGELU-trained weights gives wrong outputs."""
    if entry.activation == config.activation:
        return config
    warnings.warn(
        f"{name!r} means {config.activation} (open_clip's naming) but the {entry.tag!r} weights were trained with "
        f"{entry.activation}; using {entry.activation}. Name the model "
        f"{canonical_name(name) + ('-quickgelu' if entry.activation == 'quick_gelu' else '')!r} to silence this.",
        stacklevel=3,
    )
    return replace(config, activation=entry.activation)


def save(model: CLIP, path: str | os.PathLike, fmt: str = "clipforge") -> Path:
    """Write `model` in one of FORMATS ('hf' writes a directory)."""
    if fmt == "clipforge":
        return save_checkpoint(path, model)
    if fmt == "openai":
        from clipforge.checkpoints.openai import save_openai

        return save_openai(model, path)
    if fmt == "open_clip":
        from clipforge.checkpoints.open_clip import save_open_clip

        return save_open_clip(model, path)
    if fmt == "hf":
        from clipforge.checkpoints.hf import save_hf

        return save_hf(model, path)
    raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
