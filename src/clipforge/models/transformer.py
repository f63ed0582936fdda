"""Pre-LN transformer shared by the image (ViT) and text towers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP weights were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return x * torch.sigmoid(1.702 * x)
        return (x * 1.702).sigmoid_().mul_(x)  # same values, one new tensor instead of three


def make_activation(name: str) -> nn.Module:
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be 'gelu' or 'quick_gelu', got {name!r}")


class Attention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool) -> Tensor:  # x: (B, L, D)
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, L, Dh)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, L, Dh)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))

    def forward_one(self, x: Tensor, index: Tensor, causal: bool) -> Tensor:
        """Attention output for one query position per sample. x: (B, L, D), index: (B,) -> (B, D)."""
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads)
        rows = torch.arange(B, device=x.device)
        q = qkv[rows, index, 0].unsqueeze(2)  # (B, H, 1, Dh)
        k, v = qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)  # (B, H, L, Dh)
        mask = None
        if causal:  # the query at position i sees keys 0..i
            mask = (torch.arange(L, device=x.device) <= index[:, None])[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, 1, Dh)
        return self.proj(out.reshape(B, D))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, activation: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio), activation)

    def forward(self, x: Tensor, causal: bool) -> Tensor:  # (B, L, D)
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))

    def forward_one(self, x: Tensor, index: Tensor, causal: bool) -> Tensor:
        """The block's output at one position per sample: (B, L, D), (B,) -> (B, D). Equal to
        forward(x)[rows, index] but the MLP and attention queries run on one token instead of L."""
        rows = torch.arange(x.shape[0], device=x.device)
        y = x[rows, index] + self.attn.forward_one(self.ln_1(x), index, causal)  # (B, D)
        return y + self.mlp(self.ln_2(y))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, activation: str):
        super().__init__()
        self.width = width
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, activation) for _ in range(layers))
        self.grad_checkpointing = False

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:  # (B, L, D)
        for block in self.blocks:
            x = self._run(block, x, causal)
        return x

    def forward_pooled(self, x: Tensor, index: Tensor, causal: bool = False) -> Tensor:
        """Output at one position per sample, (B, L, D), (B,) -> (B, D): the last block runs only there."""
        for block in self.blocks[:-1]:
            x = self._run(block, x, causal)
        last = self.blocks[-1]
        if self.grad_checkpointing and x.requires_grad:
            return checkpoint(last.forward_one, x, index, causal, use_reentrant=False)
        return last.forward_one(x, index, causal)

    def _run(self, block: Block, x: Tensor, causal: bool) -> Tensor:
        if self.grad_checkpointing and x.requires_grad:
            return checkpoint(block, x, causal, use_reentrant=False)
        return block(x, causal)

    def init_weights(self) -> None:
        """OpenAI's init: std scaled by width and depth."""
        layers = len(self.blocks)
        proj_std = self.width**-0.5 * (2 * layers) ** -0.5
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=attn_std)
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.normal_(block.attn.proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.proj.bias)
            nn.init.normal_(block.mlp.fc1.weight, std=fc_std)
            nn.init.normal_(block.mlp.fc2.weight, std=proj_std)
