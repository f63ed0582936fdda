"""Causal text transformer; features are taken at the end-of-text token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clipforge.models.config import TextConfig
from clipforge.models.prefix import PrefixPack
from clipforge.models.transformer import Transformer


def length_groups(eot: Tensor, min_rows: int) -> list[Tensor]:
    """Row indices grouped by EOT position, ascending, each group >= min_rows rows (the last may be smaller).
    One group (all rows, input order) when the batch is smaller than 2 * min_rows."""
    if eot.shape[0] < 2 * min_rows:
        return [torch.arange(eot.shape[0], device=eot.device)]
    order = torch.argsort(eot, stable=True)
    lengths = eot[order].tolist()
    groups, start = [], 0
    for i in range(min_rows, len(lengths)):  # close a group at a length change once it is big enough
        if i - start >= min_rows and lengths[i] != lengths[i - 1]:
            groups.append(order[start:i])
            start = i
    groups.append(order[start:])
    return groups


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
        # the longest sequence in the batch cannot change any output. Export code switches it off. CPU
        # only: reading the lengths is a host synchronisation, which on an accelerator stalls the queue.
        self.trim_to_longest = True
        # Large batches of mixed lengths run as length-sorted groups of >= group_rows rows, each trimmed to
        # its own longest text (rows are independent: same outputs, less padding computed).
        self.group_rows = 32
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=config.width**-0.5)
        self.transformer.init_weights()

    def features(self, text: Tensor) -> Tensor:
        """End-of-text features before the projection. text: (B, L) token ids, EOT = largest id."""
        eot = text.argmax(dim=-1)  # (B,)
        if not self.trim_to_longest or text.device.type != "cpu" or torch.jit.is_tracing():
            return self._features(text, eot)
        groups = length_groups(eot, self.group_rows)
        if len(groups) == 1:
            return self._features(text[:, : int(eot.max()) + 1], eot)  # (B, L') with L' <= L
        parts = [self._features(text[index, : int(eot[index].max()) + 1], eot[index]) for index in groups]
        order = torch.cat(groups)  # row order of torch.cat(parts)
        return torch.cat(parts)[torch.argsort(order)]  # (B, W) back in input order

    def _features(self, text: Tensor, eot: Tensor) -> Tensor:
        L = text.shape[1]
        x = self.token_embedding(text) + self.positional_embedding[:L].to(self.token_embedding.weight.dtype)
        x = self.transformer.forward_pooled(x, eot, causal=True)  # (B, W) at the EOT token
        return self.ln_final(x)  # LayerNorm is per token: applying it after pooling is identical

    def forward(self, text: Tensor) -> Tensor:
        return self.features(text) @ self.text_projection  # (B, E)

    def forward_packed(self, pack: PrefixPack) -> Tensor:
        """Projected features of the texts in a shared-prefix pack, in `pack.texts` order: (T, E). Equal to
        forward() on those texts: every node sees exactly its own prefix, at its own positions."""
        device = self.token_embedding.weight.device
        x = self.token_embedding(pack.tokens.to(device))  # (R, N, W)
        x = x + self.positional_embedding[pack.positions.to(device)].to(x.dtype)
        x = self.transformer.forward_pooled(x, pack.eot.to(device), mask=pack.mask.to(device))  # (R, Q, W)
        x = x.reshape(-1, x.shape[-1])[pack.slots.to(device)]  # (T, W)
        return self.ln_final(x) @ self.text_projection  # (T, E)
