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

from clipforge.checkpoints.open_clip_config import Spec, Unsupported, spec_from_open_clip
from clipforge.models.config import mlp_ratio_for

OUTPUT = Path(__file__).resolve().parents[1] / "src" / "clipforge" / "models" / "zoo_specs.py"
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
OPENAI_PREPROCESS = {
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def open_clip_configs() -> dict[str, dict]:
    import open_clip

    folder = Path(open_clip.__file__).parent / "model_configs"
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


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


def generate() -> tuple[dict[str, Spec], dict[str, str], dict[str, Spec]]:
    """(specs, unsupported reasons, the SigLIP timm towers' fields) for every config open_clip ships (other timm
    towers become vision.kind='timm' specs, built by timm itself)."""
    specs, unsupported, timm_towers = {}, {}, {}
    for name, cfg in open_clip_configs().items():
        try:
            specs[name] = spec_from_open_clip(cfg, timm_fields=timm_vit_fields)
        except Unsupported as reason:
            unsupported[name] = str(reason)
            continue
        if specs[name]["vision"]["kind"] == "vit" and cfg["vision_cfg"].get("timm_model_name"):
            timm_towers[cfg["vision_cfg"]["timm_model_name"]] = timm_vit_fields(
                cfg["vision_cfg"]["timm_model_name"]
            )
        preprocess = preset_preprocess(name)
        if preprocess:
            specs[name]["preprocess"] = preprocess
    return specs, unsupported, dict(sorted(timm_towers.items()))


HEADER = '''"""GENERATED by `python -m benchmarks.zoo_specs` from open_clip's model configs: do not edit by hand.

OPEN_CLIP_SPECS: one spec per open_clip architecture name whose towers clipforge builds (models/presets.py
describes the format): its own ViT / ModifiedResNet / text transformer, or timm's trunks (vision kind "timm") and
transformers' encoders (text kind "hf", config.json from models/hf_text_configs.py) as open_clip builds them.
OPEN_CLIP_UNSUPPORTED: the other open_clip names, each with the option clipforge lacks.
TIMM_TOWER_FIELDS: the VisionConfig fields of each timm tower those specs use (SigLIP-layout ViTs), for loading
open_clip configs that name one (Hub repos) without timm. tests/test_zoo_presets.py fails when this file no
longer equals what the installed open_clip says.
"""

from typing import Any

'''


def render(specs: dict[str, Spec], unsupported: dict[str, str], timm_towers: dict[str, Spec]) -> str:
    body = HEADER + f"OPEN_CLIP_SPECS: dict[str, dict[str, Any]] = {specs!r}\n\n"
    body += f"OPEN_CLIP_UNSUPPORTED: dict[str, str] = {unsupported!r}\n\n"
    return body + f"TIMM_TOWER_FIELDS: dict[str, dict[str, Any]] = {timm_towers!r}\n"


def write(path: Path = OUTPUT) -> Path:
    path.write_text(render(*generate()))
    ruff = Path(sys.executable).with_name("ruff")
    subprocess.run([str(ruff), "format", "--quiet", str(path)], check=True)
    return path


if __name__ == "__main__":
    print(write())
