"""Vision Transformer image tower: patch embedding (+ class token), pre-LN blocks, pooling, projection.

Pooling is the class token (OpenAI/open_clip), the mean of the patch tokens (CLIPA) or big_vision's
multihead attention pooling head (MAP: SigLIP), chosen by `VisionConfig.pool`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipforge.models.config import Activation, VisionConfig
from clipforge.models.transformer import MLP, Transformer


class AttentionPoolHead(nn.Module):
    """big_vision's MAP head: one learned query attends over all tokens, then a pre-LN residual MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, activation: Activation, norm_eps: float):
        super().__init__()
        self.heads = heads
        self.latent = nn.Parameter(width**-0.5 * torch.randn(1, width))  # (1, W): the query token
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self.mlp = MLP(width, int(width * mlp_ratio), activation)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, N, W)
        B, N, W = x.shape
        Dh = W // self.heads
        q = self.q(self.latent.to(x.dtype)).view(1, self.heads, 1, Dh).expand(B, -1, -1, -1)  # (B, H, 1, Dh)
        k, v = self.kv(x).view(B, N, 2, self.heads, Dh).permute(2, 0, 3, 1, 4)  # each (B, H, N, Dh)
        out = self.proj(F.scaled_dot_product_attention(q, k, v).reshape(B, W))  # (B, W)
        return out + self.mlp(self.norm(out))  # (B, W)


class VisionTransformer(nn.Module):
    def __init__(self, config: VisionConfig, embed_dim: int, activation: Activation):
        super().__init__()
        if config.patch_size is None or config.image_size < config.patch_size:
            raise ValueError(f"vision.patch_size {config.patch_size} must be set and <= image_size")
        width, eps = config.width, config.norm_eps
        grid = config.image_size // config.patch_size  # a remainder is cropped by the strided conv
        scale = width**-0.5
        self.pool = config.pool
        self.final_ln_after_pool = config.final_ln_after_pool
        self.patch_embed = nn.Conv2d(
            3, width, config.patch_size, stride=config.patch_size, bias=config.patch_bias
        )
        self.class_embedding = nn.Parameter(scale * torch.randn(width)) if config.class_token else None
        tokens = grid * grid + int(config.class_token)
        self.positional_embedding = nn.Parameter(scale * torch.randn(tokens, width))
        self.ln_pre = nn.LayerNorm(width, eps=eps) if config.ln_pre else nn.Identity()
        self.transformer = Transformer(
            width, config.layers, config.num_heads, config.mlp_ratio, activation, eps
        )
        self.ln_post = nn.LayerNorm(width, eps=eps)
        self.attn_pool = (
            AttentionPoolHead(width, config.num_heads, config.mlp_ratio, activation, eps)
            if config.pool == "map"
            else None
        )
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim)) if config.projection else None
        self.transformer.init_weights()
        # FLIP (Li et al. 2023): in training, each image keeps a random (1 - patch_dropout) share of its patch
        # tokens (the class token always); eval mode sees every patch. A training knob, not architecture.
        self.patch_dropout = 0.0

    @property
    def feature_dim(self) -> int:
        return self.ln_post.normalized_shape[0]

    def embed(self, images: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, T, W), T = (1 +) patches kept
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, W)
        positions = self.positional_embedding.to(x.dtype)  # ((1+)N, W)
        has_cls = self.class_embedding is not None
        x = x + positions[int(has_cls) :]
        if self.training and self.patch_dropout > 0:
            x = self._drop_patches(x)  # (B, N', W), N' = round((1 - patch_dropout) N)
        if has_cls:
            cls = (self.class_embedding.to(x.dtype) + positions[0]).expand(x.shape[0], 1, -1)  # (B, 1, W)
            x = torch.cat([cls, x], dim=1)  # (B, 1+N', W)
        return self.ln_pre(x)

    def features(self, images: Tensor) -> Tensor:
        """Pooled features before the final projection (the paper's linear-probe input): (B, W)."""
        x = self.embed(images)  # (B, T, W)
        if self.pool == "token":  # the last block runs only at the class token
            cls_index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            return self.ln_post(self.transformer.forward_pooled(x, cls_index))  # (B, W)
        x = self.transformer(x)  # (B, T, W)
        if self.pool == "map":
            return self.attn_pool(self.ln_post(x))  # (B, W)
        patches = x[:, 1:] if self.class_embedding is not None else x  # (B, N, W)
        if self.final_ln_after_pool:
            return self.ln_post(patches.mean(dim=1))
        return self.ln_post(patches).mean(dim=1)  # (B, W)

    def _drop_patches(self, x: Tensor) -> Tensor:  # (B, N, W) -> (B, N', W): a random subset per image
        B, N, W = x.shape
        keep = max(1, round(N * (1 - self.patch_dropout)))
        kept = torch.rand(B, N, device=x.device).argsort(dim=1)[:, :keep]  # (B, N') patch indices
        return x.gather(1, kept[..., None].expand(-1, -1, W))

    def forward(self, images: Tensor) -> Tensor:  # images: (B, 3, H, W)
        features = self.features(images)  # (B, W)
        return features if self.proj is None else features @ self.proj  # (B, E)
