"""open_clip's JSON model configs -> clipforge preset specs (models/presets.py's format): the one mapping of
open_clip's options onto clipforge's config fields. benchmarks/zoo_specs.py runs it over every config open_clip
ships to generate models/zoo_specs.py (the presets); `config_from_open_clip` runs it on a Hub repo's
open_clip_config.json at load time. An option clipforge does not implement -- or does not know -- is refused
with its name (Unsupported), never dropped: a config loaded here builds the model open_clip builds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from clipforge.models.config import CLIPConfig, config_from_spec

Spec = dict[str, Any]
TimmFields = Callable[[str], Spec]


class Unsupported(ValueError):
    """An open_clip config option clipforge does not implement; the message says which."""


# Every option open_clip 3.3's configs may hold (its CLIPVisionCfg / CLIPTextCfg fields and CLIP's arguments);
# any other key is refused as unknown rather than ignored.
_TOP_OPTIONS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "init_logit_scale",
                "init_logit_bias", "nonscalar_logit_scale", "multimodal_cfg", "cast_dtype"}  # fmt: skip
_COMMON_OPTIONS = {"layers", "width", "mlp_ratio", "ls_init_value", "output_tokens", "act_kwargs", "norm_kwargs",
                   "block_type", "qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn",
                   "scale_fc", "final_ln_after_pool", "pool_type"}  # fmt: skip
_VISION_OPTIONS = _COMMON_OPTIONS | {
    "head_width", "patch_size", "image_size", "patch_dropout", "attentional_pool", "attn_pooler_queries",
    "attn_pooler_heads", "no_ln_pre", "pos_embed_type", "timm_model_name", "timm_model_pretrained", "timm_pool",
    "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path",
}  # fmt: skip
_TEXT_OPTIONS = _COMMON_OPTIONS | {
    "context_length", "vocab_size", "hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs", "heads",
    "embed_cls", "pad_id", "eos_id", "no_causal_mask", "proj_bias", "proj_type", "hf_model_name",
    "hf_model_pretrained", "hf_proj_type", "hf_pooler_type",
}  # fmt: skip
_SCALE_NORMS = {  # NormFormer-style extra LayerNorms / head scales in the blocks
    "scale_heads": "per-head attention scales",
    "scale_attn_inner": "a LayerNorm inside attention",
    "scale_attn": "a LayerNorm after attention",
    "scale_fc": "a LayerNorm inside the MLP",
}


def _check_known(cfg: dict, options: set[str], where: str) -> None:
    unknown = sorted(set(cfg) - options)
    if unknown:
        raise Unsupported(
            f"{where}.{unknown[0]}={cfg[unknown[0]]!r}: an open_clip option clipforge does not know"
        )


def recorded_timm_fields(name: str) -> Spec:
    """The VisionConfig fields of a timm tower clipforge implements (SigLIP-layout ViTs), as generated."""
    from clipforge.models.zoo_specs import TIMM_TOWER_FIELDS

    if name not in TIMM_TOWER_FIELDS:
        raise Unsupported(
            f"timm tower {name!r}: timm_proj 'none' (unprojected features) needs a SigLIP-layout ViT "
            "clipforge records (TIMM_TOWER_FIELDS); this one is not"
        )
    return dict(TIMM_TOWER_FIELDS[name])


def _reject(cfg: dict, keys: dict[str, str], where: str) -> None:
    for key, reason in keys.items():
        value = cfg.get(key)
        if value not in (None, False, 0, "", "default", "learnable"):
            raise Unsupported(f"{where}.{key}={value!r}: {reason}")


def _activation(act_kwargs: dict | None, quick_gelu: bool, where: str) -> str | None:
    """The activation open_clip builds from `act_kwargs` (a GELU approximation), None when it adds nothing."""
    if not act_kwargs:
        return None
    if act_kwargs != {"approximate": "tanh"} or quick_gelu:
        raise Unsupported(f"{where}.act_kwargs={act_kwargs!r}: only GELU's tanh approximation is implemented")
    return "gelu_tanh"


def _eps(norm_kwargs: dict | None, where: str) -> dict:
    if not norm_kwargs:
        return {}
    if set(norm_kwargs) != {"eps"}:
        raise Unsupported(f"{where}.norm_kwargs={norm_kwargs!r}: only the LayerNorm eps is implemented")
    return {"norm_eps": norm_kwargs["eps"]}


_VISION_UNSUPPORTED = {
    "attentional_pool": "attentional pooler (CoCa)",
    "ls_init_value": "layer scale",
    "pos_embed_type": "fixed sin-cos position embeddings",
    "block_type": "custom attention blocks",
    "qk_norm": "qk norm",
    "scaled_cosine_attn": "scaled cosine attention",
    **_SCALE_NORMS,
}


def _timm_spec(cfg: dict) -> Spec:
    """open_clip's TimmModel as clipforge's timm tower kind (models/timm_tower.py), field for field. open_clip's
    timm_proj null (timm's own classifier projects to embed_dim) is clipforge's 'none'; open_clip's 'none'
    (the trunk's features unprojected) exists only for SigLIP-layout towers, built natively."""
    name = cfg["timm_model_name"]
    proj = cfg.get("timm_proj", "linear")  # absent: open_clip's default; null: timm's classifier
    if proj not in (None, "linear", "mlp"):
        raise Unsupported(
            f"timm tower {name!r}: vision_cfg.timm_proj={proj!r} (unprojected trunk features) is only "
            "implemented for SigLIP-layout ViTs; valid here: null, 'linear', 'mlp'"
        )
    _reject(cfg, {"timm_model_pretrained": "ImageNet weights downloaded by timm (clipforge builds towers "
                  "empty and loads the CLIP checkpoint)",
                  "patch_dropout": "timm's patch_drop_rate"}, "vision_cfg")  # fmt: skip
    if not isinstance(cfg.get("image_size", 224), int):
        raise Unsupported(f"vision_cfg.image_size={cfg['image_size']!r}: only square images")
    spec: Spec = {"kind": "timm", "image_size": cfg.get("image_size", 224), "width": 0, "layers": 0}
    spec["timm_model_name"] = name  # width / layers: 0 = the timm trunk decides (not recorded)
    fields = {
        "timm_pool": cfg.get("timm_pool", "avg"),
        "timm_proj": "none" if proj is None else proj,
        "timm_proj_bias": bool(cfg.get("timm_proj_bias") or False),
        "timm_drop": float(cfg.get("timm_drop") or 0.0),
        "timm_drop_path": None if cfg.get("timm_drop_path") is None else float(cfg["timm_drop_path"]),
    }
    defaults = {"timm_pool": "avg", "timm_proj": "linear", "timm_proj_bias": False, "timm_drop": 0.0,
                "timm_drop_path": None}  # fmt: skip
    spec.update({key: value for key, value in fields.items() if value != defaults[key]})
    return spec


def vision_spec(cfg: dict, embed_dim: int, quick_gelu: bool, timm_fields: TimmFields) -> Spec:
    _check_known(cfg, _VISION_OPTIONS, "vision_cfg")
    _reject(cfg, _VISION_UNSUPPORTED, "vision_cfg")
    if cfg.get("timm_model_name"):
        if (cfg.get("timm_pool", "avg"), cfg.get("timm_proj", "linear")) != ("map", "none"):
            return _timm_spec(cfg)
        fields = timm_fields(cfg["timm_model_name"])
        if fields["width"] != embed_dim:
            raise Unsupported(
                f"timm tower {cfg['timm_model_name']!r}: width != embed_dim without a projection"
            )
        spec = {"kind": "vit", "image_size": cfg["image_size"], **fields, "projection": False}
        if spec["activation"] == ("quick_gelu" if quick_gelu else "gelu"):
            del spec["activation"]
        return spec
    if not isinstance(cfg.get("image_size", 224), int):
        raise Unsupported(f"vision_cfg.image_size={cfg['image_size']!r}: only square images")
    spec = {
        "image_size": cfg.get("image_size", 224),
        "width": cfg.get("width", 768),
        "layers": cfg.get("layers", 12),
    }
    spec["head_width"] = cfg.get("head_width", 64)
    if isinstance(spec["layers"], list):
        return {"kind": "resnet", **spec, "layers": tuple(spec["layers"])}
    spec = {"kind": "vit", **spec, "patch_size": cfg.get("patch_size", 16)}
    if cfg.get("mlp_ratio", 4.0) != 4.0:
        spec["mlp_ratio"] = cfg["mlp_ratio"]
    if cfg.get("no_ln_pre"):
        spec["ln_pre"] = False
    pool = {"tok": "token", "avg": "avg"}.get(cfg.get("pool_type", "tok"))
    if pool is None:
        raise Unsupported(f"vision_cfg.pool_type={cfg['pool_type']!r}: only 'tok' and 'avg'")
    if pool != "token":
        spec["pool"] = pool
    if cfg.get("final_ln_after_pool") and pool == "avg":
        spec["final_ln_after_pool"] = True
    activation = _activation(cfg.get("act_kwargs"), quick_gelu, "vision_cfg")
    return {
        **spec,
        **({"activation": activation} if activation else {}),
        **_eps(cfg.get("norm_kwargs"), "vision_cfg"),
    }


_TEXT_UNSUPPORTED = {
    "embed_cls": "appended class token (CoCa)",
    "ls_init_value": "layer scale",
    "block_type": "custom attention blocks",
    "qk_norm": "qk norm",
    "scaled_cosine_attn": "scaled cosine attention",
    **_SCALE_NORMS,
}


_HF_SIZES = {  # clipforge's TextConfig fields <- the config.json keys of each model type
    "m2m_100": ("vocab_size", "d_model", "encoder_attention_heads", "encoder_layers"),
    "default": ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers"),
}


def _hf_text_spec(cfg: dict) -> Spec:
    """open_clip's HFTextEncoder as clipforge's hf text kind (models/hf_text.py), its architecture from the
    config.json recorded in models/hf_text_configs.py (open_clip downloads it)."""
    from clipforge.models.hf_text_configs import HF_TEXT_CONFIGS

    name = cfg["hf_model_name"]
    if name not in HF_TEXT_CONFIGS:
        raise Unsupported(
            f"HF text tower {name!r}: its architecture (config.json) is not recorded in clipforge "
            f"(models/hf_text_configs.py knows {', '.join(sorted(HF_TEXT_CONFIGS))})"
        )
    pooler, proj = cfg.get("hf_pooler_type", "mean_pooler"), cfg.get("hf_proj_type", "mlp")
    if pooler not in ("mean_pooler", "cls_pooler", "cls_last_hidden_state_pooler"):
        raise Unsupported(f"text_cfg.hf_pooler_type={pooler!r}: valid: mean_pooler, cls_pooler, "
                          "cls_last_hidden_state_pooler")  # fmt: skip
    if proj not in (None, "linear", "mlp"):
        raise Unsupported(f"text_cfg.hf_proj_type={proj!r}: valid: null (identity), 'linear', 'mlp'")
    hf_config = json.loads(HF_TEXT_CONFIGS[name])
    keys = _HF_SIZES.get(hf_config["model_type"], _HF_SIZES["default"])
    vocab_size, width, heads, layers = (hf_config[key] for key in keys)
    spec: Spec = {"context_length": cfg.get("context_length", 77), "vocab_size": vocab_size, "width": width,
                  "heads": heads, "layers": layers, "kind": "hf", "hf_model_name": name,
                  "hf_config_json": HF_TEXT_CONFIGS[name], "hf_pooler_type": pooler,
                  "hf_proj_type": "none" if proj is None else proj}  # fmt: skip
    if cfg.get("hf_tokenizer_name"):
        spec["hf_tokenizer_name"] = cfg["hf_tokenizer_name"]
    return spec


def text_spec(cfg: dict, quick_gelu: bool) -> Spec:
    _check_known(cfg, _TEXT_OPTIONS, "text_cfg")
    if cfg.get("hf_model_name"):
        return _hf_text_spec(cfg)
    _reject(cfg, _TEXT_UNSUPPORTED, "text_cfg")
    spec: Spec = {
        key: cfg[key] for key in ("context_length", "vocab_size", "width", "heads", "layers") if key in cfg
    }
    if cfg.get("mlp_ratio", 4.0) != 4.0:
        spec["mlp_ratio"] = cfg["mlp_ratio"]
    if cfg.get("no_causal_mask"):
        spec["causal"] = False
    pool = cfg.get("pool_type", "argmax")
    if pool not in ("argmax", "eos", "first", "last"):
        raise Unsupported(f"text_cfg.pool_type={pool!r}: not a pooled-token mode")
    if pool != "argmax":
        spec["pool"] = pool
    if pool == "eos":
        spec["eos_id"] = cfg.get("eos_id", 2)
    if cfg.get("proj_type", "linear") == "none":
        spec["projection"] = False
    elif cfg.get("proj_type", "linear") != "linear":
        raise Unsupported(f"text_cfg.proj_type={cfg['proj_type']!r}: only 'linear' and 'none'")
    if cfg.get("proj_bias"):
        spec["projection_bias"] = True
    activation = _activation(cfg.get("act_kwargs"), quick_gelu, "text_cfg")
    if activation:
        spec["activation"] = activation
    spec.update(_eps(cfg.get("norm_kwargs"), "text_cfg"))
    if cfg.get("hf_tokenizer_name"):
        spec["hf_tokenizer_name"] = cfg["hf_tokenizer_name"]
    return spec


def spec_from_open_clip(cfg: dict, timm_fields: TimmFields | None = None) -> Spec:
    """clipforge's spec (models/presets.py's format) for an open_clip model config; raises Unsupported naming
    the first option it lacks. `timm_fields(timm_model_name)` gives the VisionConfig fields of a timm tower
    (default: the SigLIP towers recorded in models/zoo_specs.py, so no timm is needed)."""
    if "multimodal_cfg" in cfg:
        raise Unsupported("CoCa decoder: out of scope (contrastive towers only)")
    _check_known(cfg, _TOP_OPTIONS, "config")
    _reject(cfg, {"nonscalar_logit_scale": "a non-scalar logit scale"}, "config")
    quick_gelu = bool(cfg.get("quick_gelu"))
    embed_dim = cfg["embed_dim"]
    spec: Spec = {"embed_dim": embed_dim}
    spec["vision"] = vision_spec(
        cfg["vision_cfg"], embed_dim, quick_gelu, timm_fields or recorded_timm_fields
    )
    spec["text"] = text_spec(cfg["text_cfg"], quick_gelu)
    if quick_gelu:
        spec["activation"] = "quick_gelu"
    if cfg.get("init_logit_bias") is not None:
        spec["init_logit_bias"] = float(cfg["init_logit_bias"])
    return spec


_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def config_from_open_clip(data: dict, source: str | os.PathLike = "<open_clip config>") -> CLIPConfig:
    """A CLIPConfig from open_clip's model config: the JSON in open_clip/model_configs/ or a Hub repo's
    open_clip_config.json ({"model_cfg": ..., "preprocess_cfg": ...}; its preprocessing wins over the default,
    the image size follows the model). Options clipforge cannot build are a ValueError naming them."""
    try:
        spec = spec_from_open_clip(data.get("model_cfg", data))
    except (Unsupported, KeyError) as err:
        raise Unsupported(f"{source}: {err}") from None
    preprocess_cfg = data.get("preprocess_cfg") or {}
    spec["preprocess"] = {
        key: tuple(value) if key in ("mean", "std") else value
        for key, value in preprocess_cfg.items()
        if key in _PREPROCESS_KEYS and value is not None
    }
    return config_from_spec(spec)
