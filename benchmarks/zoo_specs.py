"""Generate clipforge's preset table from open_clip's own model configs (and timm's, for its SigLIP towers).

    PYTHONPATH=src .venv/bin/python -m benchmarks.zoo_specs    # rewrites src/clipforge/models/zoo_specs.py

Every JSON config open_clip ships becomes either a spec (models/presets.py's format: clipforge's field names,
only values that differ from the defaults) or a reason it is not supported. tests/test_zoo_presets.py checks
the committed file still equals what this script makes from the installed open_clip, so a new open_clip
config, or a changed one, fails a test instead of loading wrongly. Needs open_clip and timm; the library
never imports this module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from clipforge.models.config import mlp_ratio_for

OUTPUT = Path(__file__).resolve().parents[1] / "src" / "clipforge" / "models" / "zoo_specs.py"
Spec = dict[str, Any]
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
OPENAI_PREPROCESS = {
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


class Unsupported(Exception):
    """An open_clip config option clipforge does not implement; the message says which."""


def open_clip_configs() -> dict[str, dict]:
    import open_clip

    folder = Path(open_clip.__file__).parent / "model_configs"
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


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


@cache
def timm_vit_fields(name: str) -> dict:
    """VisionConfig fields of a timm ViT in big_vision's SigLIP layout (no class token, MAP head, learned
    position embeddings), read from the model timm builds (on the meta device); anything else is refused."""
    import timm
    import torch
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    with torch.device("meta"):
        trunk = timm.create_model(name, pretrained=False, num_classes=0)
    if not isinstance(trunk, TimmViT) or trunk.global_pool != "map" or trunk.cls_token is not None:
        raise Unsupported(f"timm tower {name!r}: needs the timm tower kind (not a SigLIP-layout ViT)")
    block = trunk.blocks[0]
    extras = {
        "register tokens": trunk.num_reg_tokens,
        "layer scale": not isinstance(block.ls1, torch.nn.Identity),
        "qk norm": not isinstance(block.attn.q_norm, torch.nn.Identity),
        "pre-norm": not isinstance(trunk.norm_pre, torch.nn.Identity),
        "fc norm": not isinstance(trunk.fc_norm, torch.nn.Identity),
        "no position embedding": trunk.pos_embed is None,
        "a MAP head unlike its blocks": (trunk.attn_pool.num_heads, trunk.attn_pool.mlp.fc1.out_features)
        != (block.attn.num_heads, block.mlp.fc1.out_features),
    }
    found = [what for what, present in extras.items() if present]
    if found:
        raise Unsupported(f"timm tower {name!r}: {', '.join(found)} not implemented")
    from timm.layers.activations import GELUTanh

    act = block.mlp.act
    if isinstance(act, GELUTanh) or (type(act) is torch.nn.GELU and act.approximate == "tanh"):
        activation = "gelu_tanh"
    elif type(act) is torch.nn.GELU:
        activation = "gelu"
    else:
        raise Unsupported(f"timm tower {name!r}: activation {type(act).__name__} not implemented")
    width = trunk.embed_dim
    return {
        "width": width,
        "layers": len(trunk.blocks),
        "patch_size": trunk.patch_embed.patch_size[0],
        "head_width": width // block.attn.num_heads,
        "mlp_ratio": mlp_ratio_for(block.mlp.fc1.out_features, width),
        "activation": activation,
        "norm_eps": trunk.norm.eps,
        "patch_bias": trunk.patch_embed.proj.bias is not None,
        "class_token": False,
        "ln_pre": False,
        "pool": "map",
    }


_VISION_UNSUPPORTED = {
    "attentional_pool": "attentional pooler (CoCa)",
    "ls_init_value": "layer scale",
    "pos_embed_type": "fixed sin-cos position embeddings",
    "block_type": "custom attention blocks",
    "qk_norm": "qk norm",
    "scaled_cosine_attn": "scaled cosine attention",
}


def vision_spec(cfg: dict, embed_dim: int, quick_gelu: bool) -> Spec:
    _reject(cfg, _VISION_UNSUPPORTED, "vision_cfg")
    if cfg.get("timm_model_name"):
        if (cfg.get("timm_pool"), cfg.get("timm_proj")) != ("map", "none"):
            raise Unsupported(f"timm tower {cfg['timm_model_name']!r}: needs the timm tower kind")
        fields = timm_vit_fields(cfg["timm_model_name"])
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
}


def text_spec(cfg: dict, quick_gelu: bool) -> Spec:
    if cfg.get("hf_model_name"):
        raise Unsupported(f"HF text tower {cfg['hf_model_name']!r}: needs the transformers text tower kind")
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


def preset_preprocess(name: str) -> dict:
    """The preprocessing every pretrained tag of `name` agrees on (open_clip's per-tag settings), as overrides
    of clipforge's defaults; nothing when tags disagree (the pretrained registry then carries it per tag)."""
    import open_clip

    tags = [tag for model, tag in open_clip.list_pretrained() if model == name]
    found = set()
    for tag in tags:
        cfg = open_clip.get_pretrained_cfg(name, tag)
        found.add(
            tuple(
                tuple(cfg.get(k, OPENAI_PREPROCESS[k]))
                if k in ("mean", "std")
                else cfg.get(k, OPENAI_PREPROCESS[k])
                for k in PREPROCESS_KEYS
            )
        )
    if len(found) != 1:
        return {}
    values = dict(zip(PREPROCESS_KEYS, found.pop(), strict=True))
    return {k: v for k, v in values.items() if v != OPENAI_PREPROCESS[k]}


def spec_from_open_clip(name: str, cfg: dict) -> Spec:
    """clipforge's spec for open_clip config `name`; raises Unsupported naming the first option it lacks."""
    if "multimodal_cfg" in cfg:
        raise Unsupported("CoCa decoder: out of scope (contrastive towers only)")
    _reject(cfg, {"nonscalar_logit_scale": "a non-scalar logit scale"}, "config")
    quick_gelu = bool(cfg.get("quick_gelu"))
    embed_dim = cfg["embed_dim"]
    spec: Spec = {"embed_dim": embed_dim}
    spec["vision"] = vision_spec(cfg["vision_cfg"], embed_dim, quick_gelu)
    spec["text"] = text_spec(cfg["text_cfg"], quick_gelu)
    if quick_gelu:
        spec["activation"] = "quick_gelu"
    if cfg.get("init_logit_bias") is not None:
        spec["init_logit_bias"] = float(cfg["init_logit_bias"])
    preprocess = preset_preprocess(name)
    if preprocess:
        spec["preprocess"] = preprocess
    return spec


def generate() -> tuple[dict[str, Spec], dict[str, str]]:
    specs, unsupported = {}, {}
    for name, cfg in open_clip_configs().items():
        try:
            specs[name] = spec_from_open_clip(name, cfg)
        except Unsupported as reason:
            unsupported[name] = str(reason)
    return specs, unsupported


HEADER = '''"""GENERATED by `python -m benchmarks.zoo_specs` from open_clip's model configs: do not edit by hand.

OPEN_CLIP_SPECS: one spec per open_clip architecture name whose towers clipforge implements (models/presets.py
describes the format). OPEN_CLIP_UNSUPPORTED: the other open_clip names, each with the option clipforge lacks.
tests/test_zoo_presets.py fails when this file no longer equals what the installed open_clip says.
"""

from typing import Any

'''


def render(specs: dict[str, Spec], unsupported: dict[str, str]) -> str:
    body = HEADER + f"OPEN_CLIP_SPECS: dict[str, dict[str, Any]] = {specs!r}\n\n"
    return body + f"OPEN_CLIP_UNSUPPORTED: dict[str, str] = {unsupported!r}\n"


def write(path: Path = OUTPUT) -> Path:
    path.write_text(render(*generate()))
    ruff = Path(sys.executable).with_name("ruff")
    subprocess.run([str(ruff), "format", "--quiet", str(path)], check=True)
    return path


if __name__ == "__main__":
    print(write())
