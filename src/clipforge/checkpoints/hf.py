"""Hugging Face `transformers.CLIPModel` directories (config.json + model.safetensors), ViT only.

HF splits the fused QKV projection into q/k/v Linears and stores the two output projections as
bias-free Linears (weight = our (W, E) matrix transposed). We write `eos_token_id: 2` in the text
config: transformers treats that value as "pool at argmax(input_ids)", which is exactly clipforge's
(and OpenAI's) end-of-text pooling; any other value pools at the first `eos_token_id`.
transformers itself is not needed to read or write these directories.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import Tensor

from clipforge.checkpoints.io import model_from_state, read_safetensors, save_safetensors, torch_load_safe
from clipforge.checkpoints.openai import match_preset
from clipforge.fileio import atomic_write_json
from clipforge.models import CLIP, CLIPConfig, PreprocessConfig, TextConfig, VisionConfig

ARGMAX_POOLING_EOS_ID = 2
_ACTIVATIONS = ("quick_gelu", "gelu")

# (clipforge, HF) names outside the transformer blocks; "~T" marks a transposed projection.
_TOP_NAMES = (
    ("text.token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("text.positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("text.ln_final.weight", "text_model.final_layer_norm.weight"),
    ("text.ln_final.bias", "text_model.final_layer_norm.bias"),
    ("text.text_projection", "text_projection.weight~T"),
    ("visual.patch_embed.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
    ("visual.proj", "visual_projection.weight~T"),
    ("logit_scale", "logit_scale"),
)
_BLOCK_NAMES = (("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.proj.", "self_attn.out_proj."),
                ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2."))  # fmt: skip
_TOWERS = (("text.transformer.blocks.", "text_model.encoder.layers."),
           ("visual.transformer.blocks.", "vision_model.encoder.layers."))  # fmt: skip
_BLOCK_KEY = re.compile(r"(\d+)\.(.+)")


def clipforge_to_hf(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    if "visual.proj" not in state_dict:
        raise ValueError("only ViT models map to transformers.CLIPModel (this one has a ResNet image tower)")
    out = {}
    top = dict(_TOP_NAMES)
    for key, value in state_dict.items():
        if key in top:
            name = top[key]
            out[name.removesuffix("~T")] = value.T.contiguous() if name.endswith("~T") else value
            continue
        ours, theirs = next(((o, t) for o, t in _TOWERS if key.startswith(o)), (None, None))
        if ours is None:
            raise ValueError(f"no HF name for clipforge tensor {key!r}")
        index, rest = _BLOCK_KEY.match(key[len(ours) :]).groups()
        prefix = f"{theirs}{index}."
        if rest.startswith("attn.qkv."):
            for part, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{prefix}self_attn.{part}_proj.{rest.split('.')[-1]}"] = chunk.contiguous()
            continue
        mapped = next((t + rest[len(o) :] for o, t in _BLOCK_NAMES if rest.startswith(o)), None)
        if mapped is None:
            raise ValueError(f"no HF name for clipforge tensor {key!r}")
        out[prefix + mapped] = value
    return out


def hf_to_clipforge(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith("position_ids")}
    out = {}
    top = {theirs: ours for ours, theirs in _TOP_NAMES}
    for key, value in state_dict.items():
        if key in top:
            out[top[key]] = value
            continue
        if key + "~T" in top:
            out[top[key + "~T"]] = value.T.contiguous()
            continue
        ours, theirs = next(((o, t) for o, t in _TOWERS if key.startswith(t)), (None, None))
        if ours is None:
            raise ValueError(f"unexpected tensor {key!r} in an HF CLIPModel state_dict")
        index, rest = _BLOCK_KEY.match(key[len(theirs) :]).groups()
        prefix = f"{ours}{index}."
        attn = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
        if attn:
            if attn.group(1) == "q":
                parts = [state_dict[f"{theirs}{index}.self_attn.{p}_proj.{attn.group(2)}"] for p in "qkv"]
                out[f"{prefix}attn.qkv.{attn.group(2)}"] = torch.cat(parts, dim=0)
            continue
        mapped = next((o + rest[len(t) :] for o, t in _BLOCK_NAMES if rest.startswith(t)), None)
        if mapped is None:
            raise ValueError(f"unexpected tensor {key!r} in an HF CLIPModel state_dict")
        out[prefix + mapped] = value
    return out


def hf_config_dict(config: CLIPConfig) -> dict:
    """config.json for transformers.CLIPModel."""
    v, t = config.vision, config.text
    if v.kind != "vit":
        raise ValueError("only ViT models map to transformers.CLIPModel")
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.init_logit_scale,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.width,
            "intermediate_size": int(t.width * t.mlp_ratio),
            "projection_dim": config.embed_dim,
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "hidden_act": config.activation,
            "layer_norm_eps": 1e-5,
            "bos_token_id": t.vocab_size - 2,
            "eos_token_id": ARGMAX_POOLING_EOS_ID,
            "pad_token_id": 1,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": v.width,
            "intermediate_size": int(v.width * v.mlp_ratio),
            "projection_dim": config.embed_dim,
            "num_hidden_layers": v.layers,
            "num_attention_heads": v.num_heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "hidden_act": config.activation,
            "layer_norm_eps": 1e-5,
        },
    }


def config_from_hf(data: dict, source: str | os.PathLike) -> CLIPConfig:
    try:
        t, v = data["text_config"], data["vision_config"]
        activation = t.get("hidden_act", "quick_gelu")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"{source}: text_config.hidden_act {activation!r} is not one of {_ACTIVATIONS}")
        vision = VisionConfig(
            kind="vit",
            image_size=v["image_size"],
            width=v["hidden_size"],
            layers=v["num_hidden_layers"],
            patch_size=v["patch_size"],
            heads=v["num_attention_heads"],
            mlp_ratio=v["intermediate_size"] / v["hidden_size"],
        )
        text = TextConfig(
            context_length=t["max_position_embeddings"],
            vocab_size=t["vocab_size"],
            width=t["hidden_size"],
            heads=t["num_attention_heads"],
            layers=t["num_hidden_layers"],
            mlp_ratio=t["intermediate_size"] / t["hidden_size"],
        )
    except KeyError as err:
        raise ValueError(f"{source}: config.json lacks field {err.args[0]!r}") from None
    config = CLIPConfig(
        embed_dim=data.get("projection_dim", 512),
        vision=vision,
        text=text,
        activation=activation,
        init_logit_scale=data.get("logit_scale_init_value", 2.6592),
        preprocess=PreprocessConfig(image_size=vision.image_size),
    )
    return match_preset(config) or config  # the preset's preprocessing when heads and activation agree too


def is_hf_dir(path: str | os.PathLike) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "clip"


def load_hf(path: str | os.PathLike) -> CLIP:
    """A CLIP model from an HF CLIPModel directory (model.safetensors or pytorch_model.bin)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not an HF model directory (no config.json)")
    config = config_from_hf(json.loads((path / "config.json").read_text()), path / "config.json")
    if (path / "model.safetensors").is_file():
        state_dict = read_safetensors(path / "model.safetensors")[0]
    elif (path / "pytorch_model.bin").is_file():
        state_dict = torch_load_safe(path / "pytorch_model.bin")
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")
    return model_from_state(config, hf_to_clipforge(state_dict), path)


def save_hf(model: CLIP, path: str | os.PathLike) -> Path:
    """Write an HF CLIPModel directory that `CLIPModel.from_pretrained(path)` loads offline, plus a
    preprocessor_config.json for CLIPImageProcessor with the model's resize, crop and normalisation."""
    path = Path(path)
    tensors = clipforge_to_hf(model.state_dict())
    config_json = hf_config_dict(model.config)
    pre = model.config.preprocess
    save_safetensors(path / "model.safetensors", tensors, {"format": "pt"})
    atomic_write_json(path / "config.json", config_json)
    atomic_write_json(
        path / "preprocessor_config.json",
        {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": pre.image_size},
            "resample": 3 if pre.interpolation == "bicubic" else 2,
            "do_center_crop": True,
            "crop_size": {"height": pre.image_size, "width": pre.image_size},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(pre.mean),
            "image_std": list(pre.std),
            "do_convert_rgb": True,
        },
    )
    return path
