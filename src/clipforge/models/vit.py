"""Vision Transformer image tower: patches + class token, pre-LN, projection of the class token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clipforge.models.config import VisionConfig
from clipforge.models.transformer import Transformer


class VisionTransformer(nn.Module):
    def __init__(self, config: VisionConfig, embed_dim: int, activation: str):
        super().__init__()
        if config.patch_size is None or config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} must be a multiple of patch_size {config.patch_size}"
            )
        width = config.width
        grid = config.image_size // config.patch_size
        scale = width**-0.5
        self.patch_embed = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, config.layers, config.num_heads, config.mlp_ratio, activation)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))
        self.transformer.init_weights()
        # FLIP (Li et al. 2023): in training, each image keeps a random (1 - patch_dropout) share of its patch
        # tokens (the class token always); eval mode sees every patch. A training knob, not architecture.
        self.patch_dropout = 0.0

    @property
    def feature_dim(self) -> int:
        return self.proj.shape[0]

    def features(self, images: Tensor) -> Tensor:
        """Class-token features before the final projection (the paper's linear-probe input)."""
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, W)
        positions = self.positional_embedding.to(x.dtype)  # (1+N, W)
        x = x + positions[1:]
        if self.training and self.patch_dropout > 0:
            x = self._drop_patches(x)  # (B, N', W), N' = round((1 - patch_dropout) N)
        cls = (self.class_embedding.to(x.dtype) + positions[0]).expand(x.shape[0], 1, -1)  # (B, 1, W)
        x = torch.cat([cls, x], dim=1)  # (B, 1+N', W)
        cls_index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        x = self.transformer.forward_pooled(self.ln_pre(x), cls_index)  # (B, W): only the class token
        return self.ln_post(x)  # (B, W)

    def _drop_patches(self, x: Tensor) -> Tensor:  # (B, N, W) -> (B, N', W): a random subset per image
        B, N, W = x.shape
        keep = max(1, round(N * (1 - self.patch_dropout)))
        kept = torch.rand(B, N, device=x.device).argsort(dim=1)[:, :keep]  # (B, N') patch indices
        return x.gather(1, kept[..., None].expand(-1, -1, W))

    def forward(self, images: Tensor) -> Tensor:  # images: (B, 3, H, W)
        return self.features(images) @ self.proj  # (B, E)
