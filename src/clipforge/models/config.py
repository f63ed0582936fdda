"""Typed, frozen model configs, and the preset registry built from the data in models/presets.py."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from clipforge.models.presets import (
    CLIPFORGE_SPECS,
    OPEN_CLIP_SPECS,
    OPEN_CLIP_UNSUPPORTED,
    OPENAI_ARCHITECTURES,
    OPENAI_NAMES,
)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# "gelu_tanh": GELU's tanh approximation (big_vision / SigLIP2 towers; HF's "gelu_pytorch_tanh").
Activation = Literal["gelu", "quick_gelu", "gelu_tanh"]


@dataclass(frozen=True)
class PreprocessConfig:
    """How images must be prepared for a model: travels with its weights."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    resize_mode: Literal["shortest", "squash"] = "shortest"  # squash: resize to S x S, no crop (SigLIP)


@dataclass(frozen=True)
class VisionConfig:
    kind: Literal["vit", "resnet", "timm"]
    image_size: int
    width: int  # timm: informational (the trunk's feature width)
    layers: int | tuple[int, ...]  # timm: informational
    patch_size: int | None = None  # ViT only; a remainder of image_size is cropped (as a strided conv does)
    heads: int | None = None  # default: width // 64 (ViT) or width * 32 // 64 (ResNet)
    mlp_ratio: float = 4.0
    # ViT options (open_clip's VisionTransformer and the big_vision/timm SigLIP layout):
    class_token: bool = True  # prepend a learned class token (SigLIP: none)
    patch_bias: bool = False  # bias on the patch-embedding conv (SigLIP)
    ln_pre: bool = True  # LayerNorm before the blocks (CLIPA, SigLIP: none)
    pool: Literal["token", "avg", "map"] = "token"  # class token; mean of patch tokens; attention-pool head
    final_ln_after_pool: bool = False  # pool "avg": ln_post on the pooled feature, not on every token (CLIPA)
    projection: bool = True  # (W, E) matrix after pooling; False: the pooled width is the embedding (SigLIP)
    norm_eps: float = 1e-5  # every LayerNorm of the tower (SigLIP: 1e-6)
    activation: Activation | None = None  # the tower's MLP activation; None: the model's `activation`
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
    causal: bool = True  # causal attention mask (CLIPA, SigLIP: bidirectional)
    # Which token's features: "argmax" the end-of-text token (the largest id, OpenAI's BPE); "eos" the first
    # `eos_id`; "first" / "last" a fixed position (SigLIP: "last" of the padded context).
    pool: Literal["argmax", "eos", "first", "last"] = "argmax"
    eos_id: int | None = None  # pool "eos" only
    projection: bool = True  # (W, E) matrix after pooling; False: the pooled width is the embedding
    projection_bias: bool = False  # bias added after the projection (SigLIP)
    norm_eps: float = 1e-5
    activation: Activation | None = None  # None: the model's `activation`
    # The tokenizer the weights were trained with: None = OpenAI's BPE; else a Hugging Face tokenizer
    # (hub id or folder with tokenizer.json), as open_clip's `hf_tokenizer_name`.
    hf_tokenizer_name: str | None = None
    # kind="hf" (models/hf_text.py): a transformers encoder; keys and meaning as open_clip's text_cfg
    kind: Literal["transformer", "hf"] = "transformer"
    hf_model_name: str | None = (
        None  # where the weights came from (a folder or a name of clipforge.local_weights)
    )
    hf_config_json: str | None = None  # the encoder's config.json (compact JSON): rebuilds it offline
    hf_pooler_type: Literal["mean_pooler", "max_pooler", "cls_pooler", "cls_last_hidden_state_pooler"] = (
        "mean_pooler"
    )
    hf_proj_type: Literal["linear", "mlp", "none"] = "linear"


@dataclass(frozen=True)
class CLIPConfig:
    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    activation: Activation = "gelu"  # open_clip's default; OpenAI's weights need "quick_gelu"
    init_logit_scale: float = 2.6592600369262695  # log(1 / 0.07)
    init_logit_bias: float | None = None  # a learned logit bias (sigmoid-loss models: -10); None: no bias
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        v, t = self.vision, self.text
        if v.kind == "vit" and v.pool == "token" and not v.class_token:
            raise ValueError("vision.pool 'token' needs vision.class_token=True; use 'avg' or 'map'")
        if v.kind == "vit" and not v.projection and v.width != self.embed_dim:
            raise ValueError(f"vision.projection=False needs embed_dim == vision.width ({v.width})")
        if not t.projection and t.width != self.embed_dim:
            raise ValueError(f"text.projection=False needs embed_dim == text.width ({t.width})")
        if t.pool == "eos" and t.eos_id is None:
            raise ValueError("text.pool 'eos' needs text.eos_id (the tokenizer's end-of-sequence id)")

    @property
    def vision_activation(self) -> Activation:
        return self.vision.activation or self.activation

    @property
    def text_activation(self) -> Activation:
        return self.text.activation or self.activation

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
        if vision.get("heads") is None and vision.get("kind") in (
            "vit",
            "resnet",
        ):  # files written before heads
            # were explicit meant the 64-wide default
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


def mlp_ratio_for(hidden: int, width: int) -> float:
    """A ratio r with int(width * r) == hidden, as every tower sizes its MLP: the 4-decimal one when there is
    one (how open_clip and timm write them: 1152 * 3.7362 -> 4304), else an exact fraction."""
    for ratio in (hidden / width, math.ceil(hidden / width * 1e4) / 1e4, (hidden + 0.5) / width):
        if int(width * ratio) == hidden and (ratio == round(ratio, 4) or ratio == (hidden + 0.5) / width):
            return ratio
    raise ValueError(f"no MLP ratio gives {hidden} hidden units at width {width}")


def config_from_spec(spec: dict[str, Any], activation: Activation = "gelu") -> CLIPConfig:
    """A frozen CLIPConfig from a preset spec (see models/presets.py); `head_width` becomes a head count."""
    vision = dict(spec["vision"])
    head_width = vision.pop("head_width", None)  # None: a timm tower (no clipforge attention)
    if head_width is not None:
        channels = vision["width"] * 32 if vision["kind"] == "resnet" else vision["width"]  # attention width
        vision["heads"] = channels // head_width
    if isinstance(vision.get("layers"), list):
        vision["layers"] = tuple(vision["layers"])
    pre = {"image_size": vision["image_size"], **spec.get("preprocess", {})}
    pre.update({key: tuple(pre[key]) for key in ("mean", "std") if key in pre})
    return CLIPConfig(
        embed_dim=spec["embed_dim"],
        vision=VisionConfig(**vision),
        text=TextConfig(**spec["text"]),
        activation=spec.get("activation", activation),
        init_logit_bias=spec.get("init_logit_bias"),
        preprocess=PreprocessConfig(**pre),
    )


def _build_presets() -> dict[str, CLIPConfig]:
    presets = {name: config_from_spec(spec) for name, spec in OPEN_CLIP_SPECS.items()}
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
    if key in OPEN_CLIP_UNSUPPORTED:
        raise KeyError(
            f"open_clip model {name!r} is not supported by clipforge: {OPEN_CLIP_UNSUPPORTED[key]}"
        )
    if key not in PRESETS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return PRESETS[key]


def list_models() -> list[str]:
    return list(PRESETS)
