"""Causal text transformer; features are taken at the end-of-text token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clipforge.models.config import TextConfig
from clipforge.models.transformer import Transformer


class TextTransformer(nn.Module):
    def __init__(self, config: TextConfig, embed_dim: int, activation: str):
        super().__init__()
        self.context_length = config.context_length
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.transformer = Transformer(
            config.width, config.layers, config.heads, config.mlp_ratio, activation
        )
        self.ln_final = nn.LayerNorm(config.width)
        self.text_projection = nn.Parameter(torch.empty(config.width, embed_dim))
        # Exact trimming: attention is causal and we pool at the end-of-text token, so positions after
        # the longest sequence in the batch cannot change any output. Export code switches it off.
        self.trim_to_longest = True
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=config.width**-0.5)
        self.transformer.init_weights()

    def features(self, text: Tensor) -> Tensor:
        """End-of-text features before the projection. text: (B, L) token ids, EOT = largest id."""
        eot = text.argmax(dim=-1)  # (B,)
        if self.trim_to_longest and not torch.jit.is_tracing():
            text = text[:, : int(eot.max()) + 1]  # (B, L') with L' <= L
        L = text.shape[1]
        x = self.token_embedding(text) + self.positional_embedding[:L].to(self.token_embedding.weight.dtype)
        x = self.transformer.forward_pooled(x, eot, causal=True)  # (B, W) at the EOT token
        return self.ln_final(x)  # LayerNorm is per token: applying it after pooling is identical

    def forward(self, text: Tensor) -> Tensor:
        return self.features(text) @ self.text_projection  # (B, E)
