"""The one CLIP model class: an image tower, a text tower, a learned temperature and (sigmoid-loss models such
as SigLIP) a learned logit bias."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipforge.models.config import CLIPConfig
from clipforge.models.resnet import ModifiedResNet
from clipforge.models.text import TextTransformer
from clipforge.models.vit import VisionTransformer


@dataclass
class CLIPOutput:
    """Unit-norm features of both towers and the multiplier exp(logit_scale)."""

    image_features: Tensor  # (B, E)
    text_features: Tensor  # (B, E)
    logit_scale: Tensor  # () the exponentiated temperature
    logit_bias: Tensor | None = None  # () models trained with the sigmoid loss; None otherwise

    def logits_per_image(self) -> Tensor:  # (B_img, B_txt)
        logits = self.logit_scale * self.image_features @ self.text_features.T
        return logits if self.logit_bias is None else logits + self.logit_bias


def build_visual(config: CLIPConfig) -> nn.Module:
    if config.vision.kind == "vit":
        return VisionTransformer(config.vision, config.embed_dim, config.vision_activation)
    if config.vision.kind == "resnet":
        return ModifiedResNet(config.vision, config.embed_dim)
    if config.vision.kind == "timm":
        from clipforge.models.timm_tower import TimmVisionTower

        return TimmVisionTower(config.vision, config.embed_dim)
    raise ValueError(f"vision.kind must be 'vit', 'resnet' or 'timm', got {config.vision.kind!r}")


def build_text(config: CLIPConfig) -> nn.Module:
    if config.text.kind == "transformer":
        return TextTransformer(config.text, config.embed_dim, config.text_activation)
    if config.text.kind == "hf":
        from clipforge.models.hf_text import HFTextTower

        return HFTextTower(config.text, config.embed_dim)
    raise ValueError(f"text.kind must be 'transformer' or 'hf', got {config.text.kind!r}")


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.visual = build_visual(config)
        self.text = build_text(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        bias = config.init_logit_bias
        self.logit_bias = None if bias is None else nn.Parameter(torch.tensor(float(bias)))

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    @property
    def dtype(self) -> torch.dtype:
        return self.text.token_embedding.weight.dtype

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:  # (B, 3, H, W) -> (B, E)
        features = self.visual(images.to(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: Tensor, normalize: bool = False) -> Tensor:  # (B, L) ids -> (B, E)
        features = self.text(text)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: Tensor, text: Tensor) -> CLIPOutput:
        return CLIPOutput(
            image_features=self.encode_image(images, normalize=True),
            text_features=self.encode_text(text, normalize=True),
            logit_scale=self.logit_scale.exp(),
            logit_bias=self.logit_bias,
        )

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        for tower in (self.visual, self.text):
            if hasattr(tower, "set_grad_checkpointing"):  # timm / Hugging Face towers
                tower.set_grad_checkpointing(enabled)
            elif isinstance(tower, (VisionTransformer, TextTransformer)):
                tower.transformer.grad_checkpointing = enabled
            elif isinstance(tower, ModifiedResNet):
                tower.grad_checkpointing = enabled

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
