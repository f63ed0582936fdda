"""Hugging Face `transformers` directories (config.json + model.safetensors): CLIPModel here, SiglipModel and
Siglip2Model in hf_siglip.py.

HF splits the fused QKV projection into q/k/v Linears and stores the two output projections as
bias-free Linears (weight = our (W, E) matrix transposed). We write `eos_token_id: 2` in the text
config: transformers treats that value as "pool at argmax(input_ids)", which is exactly clipforge's
(and OpenAI's) end-of-text pooling; any other value pools at the first `eos_token_id` (our pool "eos").
Loading honours each tower's `hidden_act` and `layer_norm_eps`, `eos_token_id`, preprocessor_config.json
(size, crop, resample, mean/std) and tokenizer files (a non-CLIP vocabulary: `text.hf_tokenizer_name`).
transformers itself is not needed to read or write these directories.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch
from torch import Tensor

from clipforge.checkpoints.io import model_from_state, read_safetensors, save_safetensors, torch_load_safe
from clipforge.checkpoints.openai import match_preset
from clipforge.fileio import atomic_write_json
from clipforge.models import CLIP, CLIPConfig, PreprocessConfig, TextConfig, VisionConfig
from clipforge.models.config import mlp_ratio_for

ARGMAX_POOLING_EOS_ID = 2
MODEL_TYPES = ("clip", "siglip", "siglip2")
# HF hidden_act -> clipforge activation ("gelu_new" and "gelu_pytorch_tanh" are both GELU's tanh form)
HF_ACTIVATIONS = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
}
TO_HF_ACTIVATION = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
_RESAMPLE = {2: "bilinear", 3: "bicubic"}
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model")

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


def clipforge_to_hf(state_dict: dict[str, Tensor], top_names: tuple = _TOP_NAMES) -> dict[str, Tensor]:
    """clipforge names -> HF names; `top_names` holds the (clipforge, HF) names outside the blocks."""
    if "visual.patch_embed.weight" not in state_dict:
        raise ValueError("only ViT models map to transformers models (this one has a ResNet image tower)")
    out = {}
    top = dict(top_names)
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


def hf_to_clipforge(state_dict: dict[str, Tensor], top_names: tuple = _TOP_NAMES) -> dict[str, Tensor]:
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith("position_ids")}
    out = {}
    top = {theirs: ours for ours, theirs in top_names}
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


def clip_inexpressible(config: CLIPConfig) -> list[str]:
    """The config's options transformers.CLIPModel has no field for (empty: it maps exactly)."""
    v, t = config.vision, config.text
    checks = {
        "a ResNet image tower": v.kind != "vit",
        "vision.class_token=False": not v.class_token,
        "vision.patch_bias": v.patch_bias,
        "vision.ln_pre=False": not v.ln_pre,
        f"vision.pool={v.pool!r}": v.pool != "token",
        "vision.projection=False": not v.projection,
        "text.causal=False": not t.causal,
        f"text.pool={t.pool!r}": t.pool not in ("argmax", "eos") or (t.pool == "eos" and t.eos_id == 2),
        "text.projection_bias / projection=False": t.projection_bias or not t.projection,
        "a logit bias": config.init_logit_bias is not None,
    }
    return [what for what, present in checks.items() if present]


def hf_config_dict(config: CLIPConfig) -> dict:
    """config.json for transformers.CLIPModel."""
    v, t = config.vision, config.text
    if v.kind != "vit":
        raise ValueError("only ViT models map to transformers.CLIPModel (this one has a ResNet image tower)")
    missing = clip_inexpressible(config)
    if missing:
        raise ValueError(f"transformers.CLIPModel cannot express {', '.join(missing)}; save as 'open_clip'")
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.init_logit_scale,
        "text_config": {
            "model_type": "clip_text_model",
            **hf_text_fields(config),
            "projection_dim": config.embed_dim,
            "bos_token_id": t.vocab_size - 2,
            "eos_token_id": t.eos_id if t.pool == "eos" else ARGMAX_POOLING_EOS_ID,
            "pad_token_id": 1,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            **hf_vision_fields(config),
            "projection_dim": config.embed_dim,
        },
    }


def _hf_tower(width: int, layers: int, heads: int, mlp_ratio: float, activation: str, eps: float) -> dict:
    """The HF tower fields every family spells the same way (the inverse of `tower_shapes`)."""
    return {"hidden_size": width, "intermediate_size": int(width * mlp_ratio), "num_hidden_layers": layers,
            "num_attention_heads": heads, "hidden_act": TO_HF_ACTIVATION[activation], "layer_norm_eps": eps}  # fmt: skip


def hf_text_fields(config: CLIPConfig) -> dict:
    t = config.text
    tower = _hf_tower(t.width, t.layers, t.heads, t.mlp_ratio, config.text_activation, t.norm_eps)
    return {"vocab_size": t.vocab_size, "max_position_embeddings": t.context_length, **tower}


def hf_vision_fields(config: CLIPConfig) -> dict:
    v = config.vision
    tower = _hf_tower(v.width, v.layers, v.num_heads, v.mlp_ratio, config.vision_activation, v.norm_eps)
    return {"image_size": v.image_size, "patch_size": v.patch_size, **tower}


def hf_activation(tower: dict, where: str, default: str) -> str:
    name = tower.get("hidden_act", default)
    if name not in HF_ACTIVATIONS:
        raise ValueError(f"{where}.hidden_act {name!r} is not one of {sorted(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


def tower_shapes(tower: dict) -> dict:
    """The VisionConfig / TextConfig fields every HF tower config spells the same way."""
    return {
        "width": tower["hidden_size"],
        "layers": tower["num_hidden_layers"],
        "heads": tower["num_attention_heads"],
        "mlp_ratio": mlp_ratio_for(tower["intermediate_size"], tower["hidden_size"]),
    }


def _clip_text_pool(t: dict) -> dict:
    """HF CLIP pools at argmax(ids) when eos_token_id == 2 (its legacy value), else at the first eos id."""
    eos = t.get("eos_token_id", ARGMAX_POOLING_EOS_ID)
    if eos == ARGMAX_POOLING_EOS_ID or eos == t["vocab_size"] - 1:  # the largest id: argmax finds it too
        return {}
    return {"pool": "eos", "eos_id": eos}


def config_from_hf(data: dict, source: str | os.PathLike, folder: Path | None = None) -> CLIPConfig:
    """A CLIPConfig from a CLIPModel config.json (and its folder's preprocessor and tokenizer files)."""
    try:
        t, v = data["text_config"], data["vision_config"]
        text_act = hf_activation(t, f"{source}: text_config", "quick_gelu")
        vision_act = hf_activation(v, f"{source}: vision_config", "quick_gelu")
        vision = VisionConfig(
            kind="vit",
            image_size=v["image_size"],
            patch_size=v["patch_size"],
            norm_eps=v.get("layer_norm_eps", 1e-5),
            activation=None if vision_act == text_act else vision_act,
            **tower_shapes(v),
        )
        text = TextConfig(
            context_length=t["max_position_embeddings"],
            vocab_size=t["vocab_size"],
            norm_eps=t.get("layer_norm_eps", 1e-5),
            hf_tokenizer_name=tokenizer_folder(folder, t["vocab_size"] != 49408),
            **tower_shapes(t),
            **_clip_text_pool(t),
        )
    except KeyError as err:
        raise ValueError(f"{source}: config.json lacks field {err.args[0]!r}") from None
    config = CLIPConfig(
        embed_dim=data.get("projection_dim", 512),
        vision=vision,
        text=text,
        activation=text_act,
        init_logit_scale=data.get("logit_scale_init_value", 2.6592),
        preprocess=preprocess_from_hf(folder, vision.image_size, "shortest"),
    )
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        return config
    return match_preset(config) or config  # the preset's preprocessing when heads and activation agree too


def tokenizer_folder(folder: Path | None, needed: bool) -> str | None:
    """The folder as the text tower's tokenizer when it ships tokenizer files and the model needs its own."""
    if folder is None or not needed:
        return None
    return str(folder) if any((folder / name).is_file() for name in TOKENIZER_FILES) else None


def preprocess_from_hf(folder: Path | None, image_size: int, resize_mode: str) -> PreprocessConfig:
    """Preprocessing from preprocessor_config.json (resample, mean/std; no center crop = squash), else the
    defaults. The model's image size wins over the processor's (with a warning when they differ)."""
    path = None if folder is None else folder / "preprocessor_config.json"
    if path is None or not path.is_file():
        return PreprocessConfig(image_size=image_size, resize_mode=resize_mode)
    data = json.loads(path.read_text())
    resample = data.get("resample", 3)
    if resample not in _RESAMPLE:
        raise ValueError(f"{path}: resample {resample} is not bilinear (2) or bicubic (3)")
    crop = data.get("do_center_crop", False)
    size = data.get("crop_size" if crop else "size") or {}
    size = size.get("height", size.get("shortest_edge", image_size)) if isinstance(size, dict) else size
    if size != image_size:
        warnings.warn(
            f"{path}: processor size {size} != model image_size {image_size}; using it", stacklevel=3
        )
    return PreprocessConfig(
        image_size=image_size,
        mean=tuple(data.get("image_mean", PreprocessConfig.mean)),
        std=tuple(data.get("image_std", PreprocessConfig.std)),
        interpolation=_RESAMPLE[resample],
        resize_mode="shortest" if crop else "squash",
    )


def preprocessor_dict(config: CLIPConfig, processor: str) -> dict:
    """preprocessor_config.json for CLIPImageProcessor (resize + crop) or SiglipImageProcessor (squash)."""
    pre = config.preprocess
    squash = pre.resize_mode == "squash"
    out = {
        "image_processor_type": processor,
        "do_resize": True,
        "size": {"height": pre.image_size, "width": pre.image_size}
        if squash
        else {"shortest_edge": pre.image_size},
        "resample": 3 if pre.interpolation == "bicubic" else 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pre.mean),
        "image_std": list(pre.std),
        "do_convert_rgb": True,
    }
    if not squash:
        out.update(do_center_crop=True, crop_size={"height": pre.image_size, "width": pre.image_size})
    return out


def hf_model_type(path: str | os.PathLike) -> str | None:
    config = Path(path) / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def is_hf_dir(path: str | os.PathLike) -> bool:
    return hf_model_type(path) in MODEL_TYPES


def read_hf_weights(path: Path) -> dict[str, Tensor]:
    if (path / "model.safetensors").is_file():
        return read_safetensors(path / "model.safetensors")[0]
    if (path / "pytorch_model.bin").is_file():
        return torch_load_safe(path / "pytorch_model.bin")
    raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")


def load_hf(path: str | os.PathLike) -> CLIP:
    """A CLIP model from an HF CLIPModel, SiglipModel or Siglip2Model directory."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not an HF model directory (no config.json)")
    data = json.loads((path / "config.json").read_text())
    if data.get("model_type") in ("siglip", "siglip2"):
        from clipforge.checkpoints.hf_siglip import load_siglip

        return load_siglip(path, data)
    if data.get("model_type") != "clip":
        raise ValueError(
            f"{path / 'config.json'}: model_type {data.get('model_type')!r}; valid: {MODEL_TYPES}"
        )
    config = config_from_hf(data, path / "config.json", path)
    return model_from_state(config, hf_to_clipforge(read_hf_weights(path)), path)


def save_hf(model: CLIP, path: str | os.PathLike) -> Path:
    """Write the HF directory its users load: `SiglipModel.from_pretrained(path)` for a SigLIP-layout model,
    else `CLIPModel.from_pretrained(path)`; plus preprocessor_config.json with the model's preprocessing and,
    when its tokenizer is a local folder, the tokenizer files."""
    from clipforge.checkpoints.hf_siglip import is_siglip_layout, save_siglip

    path = Path(path)
    if is_siglip_layout(model.config):
        return save_siglip(model, path)
    config_json = hf_config_dict(model.config)
    save_safetensors(path / "model.safetensors", clipforge_to_hf(model.state_dict()), {"format": "pt"})
    atomic_write_json(path / "config.json", config_json)
    atomic_write_json(
        path / "preprocessor_config.json", preprocessor_dict(model.config, "CLIPImageProcessor")
    )
    copy_tokenizer(model.config, path)
    return path


def copy_tokenizer(config: CLIPConfig, path: Path) -> None:
    source = config.text.hf_tokenizer_name
    if source is None or not Path(source).is_dir() or Path(source).resolve() == path.resolve():
        return
    for name in (*TOKENIZER_FILES, "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, path / name)
