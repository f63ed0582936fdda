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
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    raise ValueError(f"activation must be 'gelu', 'quick_gelu' or 'gelu_tanh', got {name!r}")


class Attention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool, mask: Tensor | None = None) -> Tensor:  # x: (B, L, D)
        """mask: (B, 1, L, L) boolean, True where a query may attend a key; given, it replaces `causal`."""
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, L, Dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))  # (B, L, D)

    def forward_at(self, x: Tensor, index: Tensor, mask: Tensor | None) -> Tensor:
        """Attention output for Q query positions per sample: x (B, L, D), index (B, Q),
        mask (B, 1, Q, L) or None -> (B, Q, D). Keys and values still come from all L positions."""
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads)
        rows = torch.arange(B, device=x.device)[:, None]  # (B, 1)
        q = qkv[rows, index, 0].transpose(1, 2)  # (B, H, Q, Dh)
        k, v = qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)  # (B, H, L, Dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, Q, Dh)
        return self.proj(out.transpose(1, 2).reshape(B, index.shape[1], D))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, activation: str, norm_eps: float = 1e-5):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=norm_eps)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=norm_eps)
        self.mlp = MLP(width, int(width * mlp_ratio), activation)

    def forward(self, x: Tensor, causal: bool, mask: Tensor | None = None) -> Tensor:  # (B, L, D)
        x = x + self.attn(self.ln_1(x), causal, mask)
        return x + self.mlp(self.ln_2(x))

    def forward_at(self, x: Tensor, index: Tensor, mask: Tensor | None) -> Tensor:
        """The block's output at Q positions per sample: x (B, L, D), index (B, Q) -> (B, Q, D). Equal to
        forward(x)[rows, index] but the MLP and the attention queries run on Q tokens instead of L."""
        rows = torch.arange(x.shape[0], device=x.device)[:, None]  # (B, 1)
        y = x[rows, index] + self.attn.forward_at(self.ln_1(x), index, mask)  # (B, Q, D)
        return y + self.mlp(self.ln_2(y))


class Transformer(nn.Module):
    def __init__(
        self, width: int, layers: int, heads: int, mlp_ratio: float, activation: str, norm_eps: float = 1e-5
    ):
        super().__init__()
        self.width = width
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, activation, norm_eps) for _ in range(layers)
        )
        self.grad_checkpointing = False

    def forward(self, x: Tensor, causal: bool = False, mask: Tensor | None = None) -> Tensor:  # (B, L, D)
        for block in self.blocks:
            x = self._run(block, x, causal, mask)
        return x

    def forward_pooled(
        self, x: Tensor, index: Tensor, causal: bool = False, mask: Tensor | None = None
    ) -> Tensor:
        """Outputs at chosen positions only, the last block running just there: x (B, L, D) with index (B,)
        -> (B, D), or index (B, Q) -> (B, Q, D). mask: (B, 1, L, L) boolean attention mask (True = may
        attend), replacing `causal`."""
        for block in self.blocks[:-1]:
            x = self._run(block, x, causal, mask)
        at = index[:, None] if index.dim() == 1 else index  # (B, Q)
        if mask is not None:  # the mask rows of the query positions
            rows = torch.arange(x.shape[0], device=x.device)[:, None]
            mask = mask[rows, 0, at].unsqueeze(1)  # (B, 1, Q, L)
        elif causal:  # the query at position i sees keys 0..i
            mask = (torch.arange(x.shape[1], device=x.device) <= at[..., None]).unsqueeze(1)  # (B, 1, Q, L)
        last = self.blocks[-1]
        if self.grad_checkpointing and x.requires_grad:
            out = checkpoint(last.forward_at, x, at, mask, use_reentrant=False)
        else:
            out = last.forward_at(x, at, mask)  # (B, Q, D)
        return out[:, 0] if index.dim() == 1 else out

    def _run(self, block: Block, x: Tensor, causal: bool, mask: Tensor | None) -> Tensor:
        if self.grad_checkpointing and x.requires_grad:
            return checkpoint(block, x, causal, mask, use_reentrant=False)
        return block(x, causal, mask)

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
