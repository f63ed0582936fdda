"""Preset architectures as data: one entry per open_clip model-config name, plus clipforge's small presets.

Names mean what they mean in open_clip: `X` is its config (GELU unless the config says otherwise) and
`X-quickgelu` the same shapes with QuickGELU, the activation OpenAI's weights were trained with. OpenAI's own
names (`ViT-B/32`, ...) are aliases of the `-quickgelu` presets. Every hyper-parameter that a state_dict cannot
show (head counts, activation, preprocessing) is written here explicitly, so a named model never depends on a
shape guess. `models.config` turns these specs into frozen `CLIPConfig`s.

Spec keys: embed_dim; vision {kind, image_size, width, layers, patch_size?, head_width, mlp_ratio?};
text {context_length?, vocab_size?, width, heads, layers}; activation; preprocess {image_size, ...}.
"""

from __future__ import annotations

from typing import Any

Spec = dict[str, Any]


def _text(width: int, heads: int, layers: int = 12) -> Spec:
    return {"width": width, "heads": heads, "layers": layers}


def _resnet(embed_dim: int, image_size: int, layers: tuple[int, ...], width: int, text_width: int) -> Spec:
    vision = {"kind": "resnet", "image_size": image_size, "width": width, "layers": layers, "head_width": 64}
    return {"embed_dim": embed_dim, "vision": vision, "text": _text(text_width, text_width // 64)}


def _vit(
    embed_dim: int, image_size: int, width: int, layers: int, patch: int, text: Spec, head_width: int = 64
):
    vision = {"kind": "vit", "image_size": image_size, "width": width, "layers": layers, "patch_size": patch,
              "head_width": head_width}  # fmt: skip
    return {"embed_dim": embed_dim, "vision": vision, "text": text}


# open_clip architectures whose towers are clipforge's ViT / ModifiedResNet and text transformer (GELU).
OPEN_CLIP_SPECS: dict[str, Spec] = {
    "RN50": _resnet(1024, 224, (3, 4, 6, 3), 64, 512),
    "RN101": _resnet(512, 224, (3, 4, 23, 3), 64, 512),
    "RN50x4": _resnet(640, 288, (4, 6, 10, 6), 80, 640),
    "RN50x16": _resnet(768, 384, (6, 8, 18, 8), 96, 768),
    "RN50x64": _resnet(1024, 448, (3, 15, 36, 10), 128, 1024),
    "ViT-B-32": _vit(512, 224, 768, 12, 32, _text(512, 8)),
    "ViT-B-16": _vit(512, 224, 768, 12, 16, _text(512, 8)),
    "ViT-L-14": _vit(768, 224, 1024, 24, 14, _text(768, 12)),
    "ViT-L-14-336": _vit(768, 336, 1024, 24, 14, _text(768, 12)),
    # ViT-H: 1280 wide with 16 heads of width 80 (width // 64 = 20 would be wrong).
    "ViT-H-14": _vit(1024, 224, 1280, 32, 14, _text(1024, 16, 24), head_width=80),
    "ViT-H-14-378": _vit(1024, 378, 1280, 32, 14, _text(1024, 16, 24), head_width=80),
}

# The open_clip configs that also exist as `<name>-quickgelu`.
QUICKGELU_VARIANTS: tuple[str, ...] = (
    "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64",
    "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-H-14-378",
)  # fmt: skip

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
