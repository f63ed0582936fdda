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
from clipforge.models.config import config_from_spec

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
    """OpenAI's flat layout, or open_clip's CustomTextCLIP one ("text.transformer.resblocks.")."""
    return (
        is_openai_layout(state_dict)
        or "text.token_embedding.weight" in state_dict
        and any(k.startswith("text.transformer.resblocks.") for k in state_dict)
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
    raise ValueError(f"unexpected tensor {_TRUNK + rest!r}: not part of a SigLIP-layout timm ViT")


def open_clip_to_clipforge(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """open_clip names (flat or CustomTextCLIP, native or timm SigLIP image tower) -> clipforge names."""
    out, flat = {}, {}
    for key, value in state_dict.items():
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
    """CustomTextCLIP's layout, for what open_clip's flat CLIP cannot hold (an nn.Linear or no projection)."""
    return writes_timm_trunk(config) or config.text.projection_bias or not config.text.projection


def clipforge_to_open_clip(state_dict: dict[str, Tensor], config: CLIPConfig) -> dict[str, Tensor]:
    """clipforge names -> the names `open_clip.create_model(<its config name>)` loads strictly."""
    trunk, rest = {}, {}
    for key, value in state_dict.items():
        if writes_timm_trunk(config) and key.startswith("visual."):
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
    return out


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
    if is_openai_layout(state_dict) and not any(k in state_dict for k in _OPEN_CLIP_ONLY):
        return model_from_openai_state(state_dict, config, path)
    return model_from_state(config or preset_for_state(open_clip_to_clipforge(state_dict), path),
                            open_clip_to_clipforge(state_dict), path)  # fmt: skip


def save_open_clip(model: CLIP, path: str | os.PathLike) -> Path:
    """Save in open_clip's layout: `.safetensors` like `open_clip_model.safetensors`, otherwise a
    `torch.save` state_dict (what `open_clip.create_model(name, pretrained=path)` loads)."""
    tensors = clipforge_to_open_clip(model.state_dict(), model.config)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
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
