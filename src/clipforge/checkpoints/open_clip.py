"""open_clip checkpoints: OpenAI's layout, possibly wrapped as a training checkpoint
({"state_dict": ..., "epoch": ...}) with DDP "module." / torch.compile "_orig_mod." prefixes, or
saved as `open_clip_model.safetensors`. OpenAI's names are mapped by `clipforge.checkpoints.openai`; this module
adds what only open_clip writes: CustomTextCLIP's "text."-prefixed text tower, a text projection that is an
nn.Linear (weight (E, W) and bias: SigLIP), `logit_bias`, and SigLIP's image tower in timm's layout
("visual.trunk.": patch_embed.proj, pos_embed (1, N, W), blocks.i.norm1/attn/norm2/mlp, norm, attn_pool).

open_clip files do not record the activation (nor head counts): pass `config` from the model name the file was
built with (`ViT-B-32` = GELU, `ViT-B-32-quickgelu` = QuickGELU, as in open_clip); without one, clipforge assumes
QuickGELU and warns.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clipforge.checkpoints.io import (
    is_safetensors,
    model_from_state,
    read_safetensors,
    save_safetensors,
    torch_load_safe,
)
from clipforge.checkpoints.openai import (
    clipforge_to_openai,
    is_openai_layout,
    model_from_openai_state,
    openai_to_clipforge,
    presets_with_shapes,
)
from clipforge.fileio import atomic_write
from clipforge.models import CLIP, PRESETS, CLIPConfig

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_TEXT_PARTS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
_TRUNK = "visual.trunk."

# (timm SigLIP trunk name, clipforge name) for the names outside the blocks; block names only change norm1/2.
_TRUNK_NAMES = (
    ("patch_embed.proj.weight", "patch_embed.weight"),
    ("patch_embed.proj.bias", "patch_embed.bias"),
    ("pos_embed", "positional_embedding"),  # (1, N, W) <-> (N, W)
    ("norm.weight", "ln_post.weight"),
    ("norm.bias", "ln_post.bias"),
    ("attn_pool.latent", "attn_pool.latent"),  # (1, 1, W) <-> (1, W)
)
_UNBATCHED = ("positional_embedding", "attn_pool.latent")
_OPEN_CLIP_ONLY = ("logit_bias", "text_projection.weight")
# open_clip's TimmModel head and HFTextEncoder: never in OpenAI's layout (a SigLIP trunk has no head)
_ECOSYSTEM_PREFIXES = ("visual.head.", "text.proj.")


def preset_for_state(state_dict: dict[str, Tensor], source: str | os.PathLike) -> CLIPConfig:
    """The preset whose tensors have exactly these (clipforge) names and shapes, for a file that records no
    config; a warning says what was taken from it (activation, heads, pooling cannot be read off shapes)."""
    found = presets_with_shapes(state_dict)
    names = [name for name, preset in PRESETS.items() if any(preset is p for p in found)]
    if not names:
        raise ValueError(f"{source}: no preset has these tensor names and shapes; pass the model name it was "
                         "built with (clipforge.load(path, model=NAME))")  # fmt: skip
    warnings.warn(
        f"{source}: the file does not record its architecture; its shapes fit preset(s) {names}, using "
        f"{names[0]!r} (activation, heads and pooling from it). Pass model=NAME to choose.",
        stacklevel=3,
    )
    return PRESETS[names[0]]


def is_open_clip_layout(state_dict: dict[str, Tensor]) -> bool:
    """OpenAI's flat layout, or open_clip's CustomTextCLIP one ("text.transformer.resblocks."; with a Hugging
    Face text tower: "text.transformer." + "text.proj")."""
    return (
        is_openai_layout(state_dict)
        or "text.token_embedding.weight" in state_dict
        and any(k.startswith("text.transformer.resblocks.") for k in state_dict)
        or is_hf_text_layout(state_dict)
    )


def is_hf_text_layout(state_dict: dict[str, Tensor]) -> bool:
    """open_clip's CustomTextCLIP with an HFTextEncoder (roberta-ViT-B-32, nllb-clip-*): no BPE embedding."""
    return (
        "logit_scale" in state_dict
        and "text.token_embedding.weight" not in state_dict
        and any(k.startswith("text.transformer.") for k in state_dict)
        and any(k.startswith("visual.") for k in state_dict)
    )


def _trunk_to_clipforge(rest: str, value: Tensor) -> tuple[str, Tensor]:
    theirs = dict(_TRUNK_NAMES)
    if rest in theirs:
        name = theirs[rest]
        return f"visual.{name}", value[0] if name in _UNBATCHED else value
    if rest.startswith("blocks."):
        return "visual.transformer." + rest.replace(".norm1.", ".ln_1.").replace(".norm2.", ".ln_2."), value
    if rest.startswith("attn_pool."):
        return f"visual.{rest}", value
    raise ValueError(
        f"unexpected tensor {_TRUNK + rest!r}: not part of a SigLIP-layout timm ViT; for another timm tower "
        "pass the model name it was built with, e.g. clipforge.load(path, model='EVA02-B-16')"
    )


def _kept_as_is(key: str, config: CLIPConfig | None) -> bool:
    """open_clip's TimmModel (visual.trunk/head) and HFTextEncoder (text.transformer/proj) have the same names
    as clipforge's timm and hf tower kinds; only the config can tell a timm trunk from a SigLIP one."""
    if config is None:
        return False
    return (config.vision.kind == "timm" and key.startswith("visual.")) or (
        config.text.kind == "hf" and key.startswith("text.")
    )


def open_clip_to_clipforge(
    state_dict: dict[str, Tensor], config: CLIPConfig | None = None
) -> dict[str, Tensor]:
    """open_clip names (flat or CustomTextCLIP; native, timm SigLIP or -- given a `config` of that kind -- any
    timm image tower; BPE or Hugging Face text tower) -> clipforge names."""
    out, flat = {}, {}
    for key, value in state_dict.items():
        if _kept_as_is(key, config):
            out[key] = value
            continue
        if key.startswith("text.") and key[5:].startswith(_TEXT_PARTS):
            key = key[5:]  # CustomTextCLIP -> CLIP's flat names
        if key.startswith(_TRUNK):
            name, tensor = _trunk_to_clipforge(key[len(_TRUNK) :], value)
            out[name] = tensor
        elif key == "text_projection.weight":  # nn.Linear (E, W) -> our (W, E) matrix
            out["text.text_projection"] = value.T
        elif key == "text_projection.bias":
            out["text.text_projection_bias"] = value
        elif key == "logit_bias":
            out["logit_bias"] = value
        else:
            flat[key] = value
    return {**openai_to_clipforge(flat), **out}


def _trunk_from_clipforge(name: str, value: Tensor) -> tuple[str, Tensor]:
    ours = {c: t for t, c in _TRUNK_NAMES}
    rest = name[len("visual.") :]
    if rest in ours:
        return _TRUNK + ours[rest], value[None] if rest in _UNBATCHED else value
    if rest.startswith("transformer.blocks."):
        rest = rest[len("transformer.") :].replace(".ln_1.", ".norm1.").replace(".ln_2.", ".norm2.")
        return _TRUNK + rest, value
    return _TRUNK + rest, value  # attn_pool.*


def writes_timm_trunk(config: CLIPConfig) -> bool:
    """open_clip's own ViT has a class token, no patch bias and no MAP head: a tower with any of those is one
    open_clip builds from timm (SigLIP), so its weights go in timm's layout."""
    v = config.vision
    return v.kind == "vit" and (v.pool == "map" or not v.class_token or v.patch_bias)


def writes_custom_text(config: CLIPConfig) -> bool:
    """CustomTextCLIP's layout, for what open_clip's flat CLIP cannot hold (an nn.Linear or no projection).
    (open_clip also loads the flat text names into a CustomTextCLIP: timm towers' text stays flat.)"""
    return writes_timm_trunk(config) or config.text.projection_bias or not config.text.projection


def clipforge_to_open_clip(state_dict: dict[str, Tensor], config: CLIPConfig) -> dict[str, Tensor]:
    """clipforge names -> the names `open_clip.create_model(<its config name>)` loads strictly."""
    kept, trunk, rest = {}, {}, {}
    for key, value in state_dict.items():
        if _kept_as_is(key, config):
            kept[key] = value
        elif writes_timm_trunk(config) and key.startswith("visual."):
            name, tensor = _trunk_from_clipforge(key, value)
            trunk[name] = tensor
        elif key == "text.text_projection" and config.text.projection_bias:
            trunk["text_projection.weight"] = value.T
        elif key == "text.text_projection_bias":
            trunk["text_projection.bias"] = value
        else:
            rest[key] = value
    out = {**clipforge_to_openai(rest), **trunk}
    if writes_custom_text(config):
        out = {(f"text.{k}" if k.startswith(_TEXT_PARTS) else k): v for k, v in out.items()}
    return {**out, **kept}


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
    if not is_open_clip_layout(state_dict):
        raise ValueError(f"{path}: not an open_clip CLIP state_dict; first keys: {list(state_dict)[:5]}")
    timm_or_hf = any(k.startswith(_ECOSYSTEM_PREFIXES) for k in state_dict)
    openai_names = not any(k.startswith(_TRUNK) or k in _OPEN_CLIP_ONLY for k in state_dict)
    if openai_names and not timm_or_hf and is_openai_layout(state_dict):
        return model_from_openai_state(state_dict, config, path)
    if config is None and timm_or_hf:
        raise ValueError(f"{path}: an open_clip model with a timm or Hugging Face tower records no "
                         "architecture: pass the model name it was built with, e.g. "
                         "create_model_and_transforms('convnext_base', pretrained=path)")  # fmt: skip
    # without a config the preset is found by shapes among native presets, whose names convert the same way
    converted = open_clip_to_clipforge(state_dict, config)
    return model_from_state(config or preset_for_state(converted, path), converted, path)


def save_open_clip(model: CLIP, path: str | os.PathLike) -> Path:
    """Save in open_clip's layout: `.safetensors` like `open_clip_model.safetensors`, otherwise a
    `torch.save` state_dict (what `open_clip.create_model(name, pretrained=path)` loads)."""
    tensors = clipforge_to_open_clip(model.state_dict(), model.config)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if Path(path).suffix == ".safetensors":
        return save_safetensors(path, state_dict, {"format": "pt"})
    return atomic_write(path, lambda f: torch.save(state_dict, f))
