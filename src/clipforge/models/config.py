"""Typed, frozen model configs and the preset registry (presets are data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

Activation = Literal["gelu", "quick_gelu"]


@dataclass(frozen=True)
class PreprocessConfig:
    """How images must be prepared for a model: travels with its weights."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    resize_mode: Literal["shortest"] = "shortest"


@dataclass(frozen=True)
class VisionConfig:
    kind: Literal["vit", "resnet", "timm"]
    image_size: int
    width: int  # timm: informational (the trunk's feature width)
    layers: int | tuple[int, ...]  # timm: informational
    patch_size: int | None = None  # ViT only
    heads: int | None = None  # default: width // 64 (ViT) or width * 32 // 64 (ResNet)
    mlp_ratio: float = 4.0
    # kind="timm" (models/timm_tower.py): any timm architecture; keys and meaning as open_clip's vision_cfg
    timm_model_name: str | None = None  # e.g. "tf_efficientnet_lite0", "convnext_base"
    timm_pool: str = "avg"  # timm global pool ("avg", "token", "map", "" = the model's default) or "abs_attn"
    timm_proj: Literal["linear", "mlp", "none"] = "linear"  # head after pooling ("none": timm's classifier)
    timm_proj_bias: bool = False
    timm_drop: float = 0.0  # dropout before the projection
    timm_drop_path: float | None = None  # stochastic depth rate inside the trunk (None: timm's default)

    @property
    def num_heads(self) -> int:
        if self.heads is not None:
            return self.heads
        return self.width // 64 if self.kind == "vit" else self.width * 32 // 64


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    # kind="hf" (models/hf_text.py): a transformers encoder; keys and meaning as open_clip's text_cfg
    kind: Literal["transformer", "hf"] = "transformer"
    hf_model_name: str | None = (
        None  # where the weights came from (a folder or a name of clipforge.local_weights)
    )
    hf_config_json: str | None = None  # the encoder's config.json (compact JSON): rebuilds it offline
    hf_tokenizer_name: str | None = None  # folder (or local_weights name) holding its tokenizer.json
    hf_pooler_type: Literal["mean_pooler", "max_pooler", "cls_pooler", "cls_last_hidden_state_pooler"] = (
        "mean_pooler"
    )
    hf_proj_type: Literal["linear", "mlp", "none"] = "linear"


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    activation: Activation = "quick_gelu"
    init_logit_scale: float = 2.6592600369262695  # log(1 / 0.07)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CLIPConfig:
        """Inverse of `to_dict`; unknown keys are an error naming the key."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown CLIPConfig field(s): {sorted(unknown)}; valid: {sorted(known)}")
        vision = dict(data["vision"])
        if isinstance(vision.get("layers"), list):
            vision["layers"] = tuple(vision["layers"])
        pre = dict(data.get("preprocess", {}))
        for key in ("mean", "std"):
            if key in pre:
                pre[key] = tuple(pre[key])
        rest = {k: v for k, v in data.items() if k not in ("vision", "text", "preprocess")}
        return cls(
            vision=VisionConfig(**vision),
            text=TextConfig(**data["text"]),
            preprocess=PreprocessConfig(**pre),
            **rest,
        )

    def with_image_size(self, image_size: int) -> CLIPConfig:
        return replace(
            self,
            vision=replace(self.vision, image_size=image_size),
            preprocess=replace(self.preprocess, image_size=image_size),
        )


def _openai_resnet(
    embed_dim: int, image_size: int, layers: tuple[int, ...], width: int, text_width: int
) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(kind="resnet", image_size=image_size, width=width, layers=layers),
        text=TextConfig(width=text_width, heads=text_width // 64, layers=12),
        preprocess=PreprocessConfig(image_size=image_size),
    )


def _openai_vit(
    embed_dim: int, image_size: int, width: int, layers: int, patch: int, text_width: int
) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(kind="vit", image_size=image_size, width=width, layers=layers, patch_size=patch),
        text=TextConfig(width=text_width, heads=text_width // 64, layers=12),
        preprocess=PreprocessConfig(image_size=image_size),
    )


# The nine public OpenAI models (QuickGELU, as their weights were trained) and small presets
# for tests and CPU training. Names follow open_clip ("ViT-B-32"); OpenAI's ("ViT-B/32") are aliases.
PRESETS: dict[str, CLIPConfig] = {
    "RN50": _openai_resnet(1024, 224, (3, 4, 6, 3), 64, 512),
    "RN101": _openai_resnet(512, 224, (3, 4, 23, 3), 64, 512),
    "RN50x4": _openai_resnet(640, 288, (4, 6, 10, 6), 80, 640),
    "RN50x16": _openai_resnet(768, 384, (6, 8, 18, 8), 96, 768),
    "RN50x64": _openai_resnet(1024, 448, (3, 15, 36, 10), 128, 1024),
    "ViT-B-32": _openai_vit(512, 224, 768, 12, 32, 512),
    "ViT-B-16": _openai_vit(512, 224, 768, 12, 16, 512),
    "ViT-L-14": _openai_vit(768, 224, 1024, 24, 14, 768),
    "ViT-L-14-336": _openai_vit(768, 336, 1024, 24, 14, 768),
    # Tiny presets: seconds on a CPU, same code paths as the big ones.
    "tiny-vit": CLIPConfig(
        embed_dim=64,
        vision=VisionConfig(kind="vit", image_size=32, width=64, layers=2, patch_size=8, heads=2),
        text=TextConfig(context_length=77, width=64, heads=2, layers=2),
        activation="gelu",
        preprocess=PreprocessConfig(image_size=32),
    ),
    "tiny-resnet": CLIPConfig(
        embed_dim=64,
        vision=VisionConfig(kind="resnet", image_size=64, width=16, layers=(1, 1, 1, 1), heads=4),
        text=TextConfig(context_length=77, width=64, heads=2, layers=2),
        activation="gelu",
        preprocess=PreprocessConfig(image_size=64),
    ),
    # The CIFAR-10 demo (`clipforge demo`, docs/demo.md): ~0.1 GFLOPs per training sample at 32x32, a short
    # text context (template captions are <= 12 tokens) and the full BPE vocabulary, so that clipforge.tokenize
    # and every other command work on its checkpoint unchanged.
    "demo-cifar": CLIPConfig(
        embed_dim=128,
        vision=VisionConfig(kind="resnet", image_size=32, width=32, layers=(1, 1, 1, 1), heads=8),
        text=TextConfig(context_length=16, width=128, heads=2, layers=2),
        activation="gelu",
        preprocess=PreprocessConfig(image_size=32),
    ),
}

from clipforge.models.tower_presets import TOWER_PRESETS  # noqa: E402 (it needs the classes above)

PRESETS.update(TOWER_PRESETS)

OPENAI_PRESETS = (
    "RN50",
    "RN101",
    "RN50x4",
    "RN50x16",
    "RN50x64",
    "ViT-B-32",
    "ViT-B-16",
    "ViT-L-14",
    "ViT-L-14-336",
)
ALIASES = {
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}


def get_config(name: str) -> CLIPConfig:
    """Look up a preset by clipforge/open_clip name or OpenAI alias."""
    key = ALIASES.get(name, name)
    if key.endswith("-quickgelu"):
        key = key[: -len("-quickgelu")]
    if key not in PRESETS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return PRESETS[key]


def list_models() -> list[str]:
    return list(PRESETS)
