"""Typed, frozen model configs, and the preset registry built from the data in models/presets.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from clipforge.models.presets import (
    CLIPFORGE_SPECS,
    OPEN_CLIP_SPECS,
    OPENAI_ARCHITECTURES,
    OPENAI_NAMES,
    QUICKGELU_VARIANTS,
)

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
    kind: Literal["vit", "resnet"]
    image_size: int
    width: int
    layers: int | tuple[int, ...]
    patch_size: int | None = None  # ViT only
    heads: int | None = None  # default: width // 64 (ViT) or width * 32 // 64 (ResNet)
    mlp_ratio: float = 4.0

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


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    activation: Activation = "gelu"  # open_clip's default; OpenAI's weights need "quick_gelu"
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
        if vision.get("heads") is None:  # files written before heads were explicit meant the 64-wide default
            vision["heads"] = VisionConfig(**vision).num_heads
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


def config_from_spec(spec: dict[str, Any], activation: Activation = "gelu") -> CLIPConfig:
    """A frozen CLIPConfig from a preset spec (see models/presets.py); `head_width` becomes a head count."""
    vision = dict(spec["vision"])
    head_width = vision.pop("head_width")
    channels = vision["width"] * 32 if vision["kind"] == "resnet" else vision["width"]  # attention width
    vision["heads"] = channels // head_width
    text = TextConfig(**spec["text"])
    pre = PreprocessConfig(**{"image_size": vision["image_size"], **spec.get("preprocess", {})})
    return CLIPConfig(
        embed_dim=spec["embed_dim"],
        vision=VisionConfig(**vision),
        text=text,
        activation=spec.get("activation", activation),
        preprocess=pre,
    )


def _build_presets() -> dict[str, CLIPConfig]:
    presets = {name: config_from_spec(spec) for name, spec in OPEN_CLIP_SPECS.items()}
    for name in QUICKGELU_VARIANTS:
        presets[f"{name}-quickgelu"] = config_from_spec(OPEN_CLIP_SPECS[name], "quick_gelu")
    presets.update({name: config_from_spec(spec) for name, spec in CLIPFORGE_SPECS.items()})
    return presets


PRESETS: dict[str, CLIPConfig] = _build_presets()


# Only OpenAI's slash names are aliases: "RN50" is open_clip's GELU config, as in open_clip; `clipforge.load`
# (openai/CLIP's front door) also reads "RN50" as OpenAI's model, see OPENAI_NAMES.
ALIASES: dict[str, str] = {name: preset for name, preset in OPENAI_NAMES.items() if "/" in name}
OPENAI_PRESETS: tuple[str, ...] = OPENAI_ARCHITECTURES  # the nine architectures OpenAI released


def get_config(name: str) -> CLIPConfig:
    """Look up a preset by its open_clip name (`X` = open_clip's config, `X-quickgelu` = QuickGELU) or an
    OpenAI alias (`ViT-B/32` = `ViT-B-32-quickgelu`, the activation of OpenAI's weights)."""
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return PRESETS[key]


def list_models() -> list[str]:
    return list(PRESETS)
