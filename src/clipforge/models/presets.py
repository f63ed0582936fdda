"""Preset architectures as data: one entry per open_clip model-config name, plus clipforge's small presets.

Names mean what they mean in open_clip: `X` is its config (GELU unless the config says otherwise) and
`X-quickgelu` the same shapes with QuickGELU, the activation OpenAI's weights were trained with. OpenAI's own
names (`ViT-B/32`, ...) are aliases of the `-quickgelu` presets. Every hyper-parameter that a state_dict cannot
show (head counts, activation, preprocessing) is written here explicitly, so a named model never depends on a
shape guess. `models.config` turns these specs into frozen `CLIPConfig`s.

Spec keys: embed_dim; vision {kind, image_size, width, layers, head_width, and any other VisionConfig field};
text {any TextConfig field}; activation; init_logit_bias; preprocess {any PreprocessConfig field}. Only values
that differ from the config defaults are written.
"""

from __future__ import annotations

from typing import Any

from clipforge.models.tower_presets import TOWER_SPECS
from clipforge.models.zoo_specs import OPEN_CLIP_SPECS, OPEN_CLIP_UNSUPPORTED

Spec = dict[str, Any]

__all__ = [
    "OPEN_CLIP_SPECS",
    "OPEN_CLIP_UNSUPPORTED",
    "QUICKGELU_VARIANTS",
    "CLIPFORGE_SPECS",
    "OPENAI_NAMES",
]


def _text(width: int, heads: int, layers: int = 12) -> Spec:
    return {"width": width, "heads": heads, "layers": layers}


# open_clip's architectures whose towers clipforge implements (ViT incl. the SigLIP layout, ModifiedResNet, text
# transformer), one spec per open_clip config name, generated from open_clip's JSON configs by
# benchmarks/zoo_specs.py; OPEN_CLIP_UNSUPPORTED names the others with the option clipforge lacks.
# ViT-H, for one, is 1280 wide with 16 heads of width 80 (width // 64 = 20 would be wrong).

# The open_clip configs that also exist as `<name>-quickgelu`.
QUICKGELU_VARIANTS: tuple[str, ...] = tuple(
    name.removesuffix("-quickgelu") for name in OPEN_CLIP_SPECS if name.endswith("-quickgelu")
)

# Small presets: seconds on a CPU, same code paths as the big ones (GELU, explicit heads).
CLIPFORGE_SPECS: dict[str, Spec] = {
    "tiny-vit": {
        "embed_dim": 64,
        "vision": {
            "kind": "vit",
            "image_size": 32,
            "width": 64,
            "layers": 2,
            "patch_size": 8,
            "head_width": 32,
        },
        "text": _text(64, 2, 2),
    },
    "tiny-resnet": {
        "embed_dim": 64,
        "vision": {
            "kind": "resnet",
            "image_size": 64,
            "width": 16,
            "layers": (1, 1, 1, 1),
            "head_width": 128,
        },
        "text": _text(64, 2, 2),
    },
    # The CIFAR-10 demo (`clipforge demo`, docs/demo.md): ~0.1 GFLOPs per training sample at 32x32, a short
    # text context (template captions are <= 12 tokens) and the full BPE vocabulary, so that clipforge.tokenize
    # and every other command work on its checkpoint unchanged.
    "demo-cifar": {
        "embed_dim": 128,
        "vision": {
            "kind": "resnet",
            "image_size": 32,
            "width": 32,
            "layers": (1, 1, 1, 1),
            "head_width": 128,
        },
        "text": {"context_length": 16, "width": 128, "heads": 2, "layers": 2},
    },
}

CLIPFORGE_SPECS.update(
    TOWER_SPECS
)  # timm / Hugging Face towers and the Flickr8k recipes (models/tower_presets.py)

# The nine architectures OpenAI released (their weights: QuickGELU, OpenAI's mean/std, bicubic).
OPENAI_ARCHITECTURES: tuple[str, ...] = (
    "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336",
)  # fmt: skip

# openai/CLIP's model names -> the preset with the shapes and activation of OpenAI's released weights.
OPENAI_NAMES: dict[str, str] = {
    "RN50": "RN50-quickgelu",
    "RN101": "RN101-quickgelu",
    "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu",
    "RN50x64": "RN50x64-quickgelu",
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}
