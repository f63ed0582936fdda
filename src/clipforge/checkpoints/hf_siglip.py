"""Hugging Face `transformers.SiglipModel` / `Siglip2Model` directories <-> clipforge's SigLIP-layout ViT.

SigLIP's towers in HF: encoder blocks named as in CLIP (hf.py maps them), the image tower's patch conv with a
bias, no class token and a MAP head (`head.probe` = our `attn_pool.latent`; `head.attention` is an
nn.MultiheadAttention whose fused in_proj is our q and kv Linears), the text tower pooled at the last position
with an nn.Linear `head` (our projection + bias), and `logit_scale` / `logit_bias` of shape (1,).

Siglip2Model (NaFlex) embeds patches with a Linear on (p, p, C)-flattened patches and resizes its position
embeddings to each image's patch grid; at the checkpoint's own grid (sqrt(num_patches) squared) that is the
identity, so it loads as a fixed-size tower at image_size = sqrt(num_patches) * patch_size (its variable-
resolution preprocessing is not reproduced). SigLIP2's fixed-resolution checkpoints are `siglip` folders.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from clipforge.checkpoints.hf import (
    clipforge_to_hf,
    copy_tokenizer,
    hf_activation,
    hf_text_fields,
    hf_to_clipforge,
    hf_vision_fields,
    preprocess_from_hf,
    preprocessor_dict,
    read_hf_weights,
    tokenizer_folder,
    tower_shapes,
)
from clipforge.checkpoints.io import model_from_state, save_safetensors
from clipforge.fileio import atomic_write_json
from clipforge.models import CLIP, CLIPConfig, TextConfig, VisionConfig

# (clipforge, HF) names outside the blocks; "~T" marks a transposed matrix.
_TOP_NAMES = (
    ("text.token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("text.positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("text.ln_final.weight", "text_model.final_layer_norm.weight"),
    ("text.ln_final.bias", "text_model.final_layer_norm.bias"),
    ("text.text_projection", "text_model.head.weight~T"),
    ("text.text_projection_bias", "text_model.head.bias"),
    ("visual.patch_embed.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.patch_embed.bias", "vision_model.embeddings.patch_embedding.bias"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
    ("visual.attn_pool.proj.weight", "vision_model.head.attention.out_proj.weight"),
    ("visual.attn_pool.proj.bias", "vision_model.head.attention.out_proj.bias"),
    ("visual.attn_pool.norm.weight", "vision_model.head.layernorm.weight"),
    ("visual.attn_pool.norm.bias", "vision_model.head.layernorm.bias"),
    ("visual.attn_pool.mlp.fc1.weight", "vision_model.head.mlp.fc1.weight"),
    ("visual.attn_pool.mlp.fc1.bias", "vision_model.head.mlp.fc1.bias"),
    ("visual.attn_pool.mlp.fc2.weight", "vision_model.head.mlp.fc2.weight"),
    ("visual.attn_pool.mlp.fc2.bias", "vision_model.head.mlp.fc2.bias"),
)
_HEAD = "vision_model.head."
_SCALARS = ("logit_scale", "logit_bias")


def is_siglip_layout(config: CLIPConfig) -> bool:
    """Exactly what SiglipModel holds: a MAP-pooled ViT without class token, ln_pre or projection, and a
    bidirectional text tower pooled at the last position with a biased projection."""
    v, t = config.vision, config.text
    vision = v.kind == "vit" and (v.pool, v.class_token, v.ln_pre, v.projection, v.patch_bias) == (
        "map", False, False, False, True)  # fmt: skip
    return vision and (t.causal, t.pool, t.projection, t.projection_bias) == (False, "last", True, True)


def siglip_to_clipforge(state_dict: dict[str, Tensor], siglip2: bool) -> dict[str, Tensor]:
    rest = {k: v for k, v in state_dict.items() if not k.startswith(_HEAD + "attention.in_proj")}
    rest = {k: v for k, v in rest.items() if k not in (*_SCALARS, _HEAD + "probe")}
    out = hf_to_clipforge(rest, _TOP_NAMES)
    width = state_dict[_HEAD + "probe"].shape[-1]
    for part in ("weight", "bias"):
        fused = state_dict[f"{_HEAD}attention.in_proj_{part}"]  # (3W, ...): q, k, v
        out[f"visual.attn_pool.q.{part}"], out[f"visual.attn_pool.kv.{part}"] = fused[:width], fused[width:]
    out["visual.attn_pool.latent"] = state_dict[_HEAD + "probe"].reshape(1, width)
    for name in _SCALARS:
        out[name] = state_dict[name].reshape(())
    if siglip2:  # Linear on (p, p, C)-flattened patches -> a (W, C, p, p) conv
        linear = out["visual.patch_embed.weight"]  # (W, p * p * C)
        patch = math.isqrt(linear.shape[1] // 3)
        out["visual.patch_embed.weight"] = (
            linear.view(width, patch, patch, 3).permute(0, 3, 1, 2).contiguous()
        )
    return out


def clipforge_to_siglip(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    rest = {
        k: v
        for k, v in state_dict.items()
        if not k.startswith(("visual.attn_pool.q.", "visual.attn_pool.kv."))
    }
    rest = {k: v for k, v in rest.items() if k not in (*_SCALARS, "visual.attn_pool.latent")}
    out = clipforge_to_hf(rest, _TOP_NAMES)
    for part in ("weight", "bias"):
        q, kv = state_dict[f"visual.attn_pool.q.{part}"], state_dict[f"visual.attn_pool.kv.{part}"]
        out[f"{_HEAD}attention.in_proj_{part}"] = torch.cat([q, kv])
    out[_HEAD + "probe"] = state_dict["visual.attn_pool.latent"][None]  # (1, 1, W)
    for name in _SCALARS:
        out[name] = state_dict[name].reshape(1)
    return out


def config_from_siglip(data: dict, folder: Path) -> CLIPConfig:
    source = folder / "config.json"
    try:
        t, v = data["text_config"], data["vision_config"]
        if not v.get("vision_use_head", True):
            raise ValueError(f"{source}: vision_use_head=false (no MAP head) is not a CLIP-style model")
        patch = v["patch_size"]
        image_size = math.isqrt(v["num_patches"]) * patch if "num_patches" in v else v["image_size"]
        text_act = hf_activation(t, f"{source}: text_config", "gelu_pytorch_tanh")
        vision_act = hf_activation(v, f"{source}: vision_config", "gelu_pytorch_tanh")
        vision = VisionConfig(
            kind="vit", image_size=image_size, patch_size=patch, class_token=False, patch_bias=True,
            ln_pre=False, pool="map", projection=False, norm_eps=v.get("layer_norm_eps", 1e-6),
            activation=vision_act, **tower_shapes(v),
        )  # fmt: skip
        text = TextConfig(
            context_length=t["max_position_embeddings"], vocab_size=t["vocab_size"], causal=False, pool="last",
            projection_bias=True, norm_eps=t.get("layer_norm_eps", 1e-6), activation=text_act,
            hf_tokenizer_name=tokenizer_folder(folder, True), **tower_shapes(t),
        )  # fmt: skip
        embed_dim = t.get("projection_size", t["hidden_size"])
    except KeyError as err:
        raise ValueError(f"{source}: config.json lacks field {err.args[0]!r}") from None
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=vision,
        text=text,
        activation=text_act,
        init_logit_scale=math.log(10.0),
        init_logit_bias=-10.0,
        preprocess=preprocess_from_hf(folder, image_size, "squash"),
    )


def load_siglip(path: Path, data: dict) -> CLIP:
    config = config_from_siglip(data, path)
    state_dict = siglip_to_clipforge(read_hf_weights(path), siglip2=data["model_type"] == "siglip2")
    return model_from_state(config, state_dict, path)


def siglip_config_dict(config: CLIPConfig) -> dict:
    """config.json for transformers.SiglipModel."""
    return {
        "architectures": ["SiglipModel"],
        "model_type": "siglip",
        "text_config": {
            "model_type": "siglip_text_model",
            **hf_text_fields(config),
            "projection_size": config.embed_dim,
        },
        "vision_config": {"model_type": "siglip_vision_model", **hf_vision_fields(config)},
    }


def save_siglip(model: CLIP, path: Path) -> Path:
    """A directory `SiglipModel.from_pretrained(path)` loads offline (SigLIP and SigLIP2 alike)."""
    save_safetensors(path / "model.safetensors", clipforge_to_siglip(model.state_dict()), {"format": "pt"})
    atomic_write_json(path / "config.json", siglip_config_dict(model.config))
    atomic_write_json(
        path / "preprocessor_config.json", preprocessor_dict(model.config, "SiglipImageProcessor")
    )
    copy_tokenizer(model.config, path)
    return path
