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
from clipforge.models.config import config_from_spec

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


# open_clip model-config options clipforge builds, and the others at the value that changes nothing (a config
# naming any other option or value is refused with its name, rather than loaded as a different model).
_TOP_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}
_TOP_NEUTRAL = {"init_logit_bias": None, "nonscalar_logit_scale": False, "custom_text": False}
_VISION_KEYS = {"image_size", "layers", "width", "head_width", "mlp_ratio", "patch_size"}
_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
_COMMON_NEUTRAL = {
    "ls_init_value": None, "output_tokens": False, "act_kwargs": None, "norm_kwargs": None, "block_type": None,
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
    "scale_attn": False, "scale_fc": False, "final_ln_after_pool": False,
}  # fmt: skip
_VISION_NEUTRAL = {
    **_COMMON_NEUTRAL, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
    "pool_type": "tok", "timm_model_name": None, "timm_model_pretrained": False,
}  # fmt: skip
_TEXT_NEUTRAL = {
    **_COMMON_NEUTRAL, "hf_tokenizer_name": None, "tokenizer_mode": None, "tokenizer_kwargs": None,
    "embed_cls": False, "pad_id": 0, "no_causal_mask": False, "pool_type": "argmax", "proj_bias": False,
    "proj_type": "linear", "hf_model_name": None,
}  # fmt: skip
# Options that only matter when another one is on (attentional pool, timm / HF towers, 'eos' pooling) or only
# in training (patch dropout, the initial temperature): any value builds the same model here.
_IGNORED = {"patch_dropout", "init_logit_scale", "attn_pooler_queries", "attn_pooler_heads", "timm_pool", "timm_proj",
            "timm_proj_bias", "timm_drop", "timm_drop_path", "eos_id", "hf_model_pretrained", "hf_proj_type",
            "hf_pooler_type", "cast_dtype"}  # fmt: skip


def _check_options(cfg: dict, known: set[str], neutral: dict, where: str) -> None:
    for key, value in cfg.items():
        if key in known or key in _IGNORED or (key in neutral and value == neutral[key]):
            continue
        option = f"{where}{key}={value!r}"
        if key in neutral:
            raise ValueError(
                f"open_clip option {option} is not supported by clipforge (only {neutral[key]!r})"
            )
        raise ValueError(f"open_clip option {option} is not supported by clipforge (unknown option)")


def config_from_open_clip(data: dict, source: str | os.PathLike = "<open_clip config>") -> CLIPConfig:
    """A CLIPConfig from open_clip's model config: the JSON in open_clip/model_configs/ or a Hub repo's
    open_clip_config.json ({"model_cfg": ..., "preprocess_cfg": ...}; its preprocessing wins over the default,
    the image size follows the model). Options clipforge cannot build are an error naming them."""
    model_cfg = data.get("model_cfg", data)
    try:
        for cfg, known, neutral, where in (
            (model_cfg, _TOP_KEYS, _TOP_NEUTRAL, ""),
            (model_cfg["vision_cfg"], _VISION_KEYS, _VISION_NEUTRAL, "vision_cfg."),
            (model_cfg["text_cfg"], _TEXT_KEYS, _TEXT_NEUTRAL, "text_cfg."),
        ):
            _check_options(cfg, known, neutral, where)
        spec = _spec_from_open_clip(model_cfg, data.get("preprocess_cfg") or {})
    except (KeyError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None
    return config_from_spec(spec, "quick_gelu" if model_cfg.get("quick_gelu") else "gelu")


def _spec_from_open_clip(model_cfg: dict, preprocess_cfg: dict) -> dict:
    """open_clip's model config -> a preset spec (models/presets.py), with open_clip's defaults filled in."""
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    image_size = vision.get("image_size", 224)
    if not isinstance(image_size, int):
        if len(set(image_size)) != 1:
            raise ValueError(f"vision_cfg.image_size={image_size!r}: only square images are supported")
        image_size = image_size[0]
    layers = vision.get("layers", 12)
    resnet = isinstance(layers, (list, tuple))
    spec_vision = {"kind": "resnet" if resnet else "vit", "image_size": image_size,
                   "width": vision.get("width", 768), "layers": tuple(layers) if resnet else layers,
                   "head_width": vision.get("head_width", 64)}  # fmt: skip
    if not resnet:
        spec_vision.update(patch_size=vision.get("patch_size", 16), mlp_ratio=vision.get("mlp_ratio", 4.0))
    spec_text = {"context_length": text.get("context_length", 77), "vocab_size": text.get("vocab_size", 49408),
                 "width": text.get("width", 512), "heads": text.get("heads", 8), "layers": text.get("layers", 12),
                 "mlp_ratio": text.get("mlp_ratio", 4.0)}  # fmt: skip
    keys = ("mean", "std", "interpolation", "resize_mode")
    preprocess = {k: tuple(v) if k in ("mean", "std") else v for k, v in preprocess_cfg.items() if k in keys}
    return {
        "embed_dim": model_cfg["embed_dim"],
        "vision": spec_vision,
        "text": spec_text,
        "preprocess": preprocess,
    }
