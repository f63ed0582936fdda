"""Text transformer: causal (OpenAI/open_clip) or bidirectional (CLIPA, SigLIP), features taken at one token
(the end-of-text token, the first `eos_id`, or a fixed first/last position: `TextConfig.pool`)."""

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
        self.causal = config.causal
        self.pool = config.pool
        self.eos_id = config.eos_id
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.transformer = Transformer(
            config.width, config.layers, config.heads, config.mlp_ratio, activation, config.norm_eps
        )
        self.ln_final = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.text_projection = (
            nn.Parameter(torch.empty(config.width, embed_dim)) if config.projection else None
        )
        self.text_projection_bias = nn.Parameter(torch.zeros(embed_dim)) if config.projection_bias else None
        # Exact trimming: with a causal mask and pooling at the EOT (or first) token, positions after the
        # longest sequence in the batch cannot change any output. Export code switches it off; a bidirectional
        # tower or "last" pooling never trims (`trims_exactly`). CPU only: reading the lengths is a host
        # synchronisation, which on an accelerator stalls the queue.
        self.trim_to_longest = True
        # Large batches of mixed lengths run as length-sorted groups of >= group_rows rows, each trimmed to
        # its own longest text (rows are independent: same outputs, less padding computed).
        self.group_rows = 32
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if self.text_projection is not None:
            nn.init.normal_(self.text_projection, std=config.width**-0.5)
        self.transformer.init_weights()

    @property
    def trims_exactly(self) -> bool:
        """Whether dropping the positions after the pooled token leaves every output unchanged."""
        return self.causal and self.pool != "last"

    @property
    def shares_prefixes(self) -> bool:
        """Whether `forward_packed` (shared-prefix packing, models.prefix) is exact for this tower: a causal
        mask, and pooling at the end-of-text token that packing finds as the largest id."""
        return self.causal and self.pool == "argmax"

    def pool_index(self, text: Tensor) -> Tensor:  # (B, L) token ids -> (B,) pooled position
        if self.pool == "argmax":
            return text.argmax(dim=-1)  # EOT is the largest id
        if self.pool == "eos":
            return (text == self.eos_id).int().argmax(dim=-1)  # the first eos_id (0 if none, as open_clip)
        position = 0 if self.pool == "first" else text.shape[1] - 1
        return torch.full((text.shape[0],), position, dtype=torch.long, device=text.device)

    def features(self, text: Tensor) -> Tensor:
        """Pooled features before the projection: (B, L) token ids -> (B, W)."""
        index = self.pool_index(text)  # (B,)
        if (
            not (self.trim_to_longest and self.trims_exactly)
            or text.device.type != "cpu"
            or torch.jit.is_tracing()
        ):
            return self._features(text, index)
        groups = length_groups(index, self.group_rows)
        if len(groups) == 1:
            return self._features(text[:, : int(index.max()) + 1], index)  # (B, L') with L' <= L
        parts = [self._features(text[rows, : int(index[rows].max()) + 1], index[rows]) for rows in groups]
        order = torch.cat(groups)  # row order of torch.cat(parts)
        return torch.cat(parts)[torch.argsort(order)]  # (B, W) back in input order

    def _features(self, text: Tensor, index: Tensor) -> Tensor:
        L = text.shape[1]
        x = self.token_embedding(text) + self.positional_embedding[:L].to(self.token_embedding.weight.dtype)
        x = self.transformer.forward_pooled(x, index, causal=self.causal)  # (B, W) at the pooled token
        return self.ln_final(x)  # LayerNorm is per token: applying it after pooling is identical

    def project(self, features: Tensor) -> Tensor:  # (..., W) -> (..., E)
        if self.text_projection is not None:
            features = features @ self.text_projection
        return features if self.text_projection_bias is None else features + self.text_projection_bias

    def forward(self, text: Tensor) -> Tensor:
        return self.project(self.features(text))  # (B, E)

    def forward_packed(self, pack: PrefixPack) -> Tensor:
        """Projected features of the texts in a shared-prefix pack, in `pack.texts` order: (T, E). Equal to
        forward() on those texts: every node sees exactly its own prefix, at its own positions."""
        if not self.shares_prefixes:
            raise ValueError(
                f"prefix packing needs a causal text tower pooled at the EOT token (this one: causal="
                f"{self.causal}, pool={self.pool!r}); encode without share_prefixes"
            )
        device = self.token_embedding.weight.device
        inputs = (pack.tokens, pack.positions, pack.mask, pack.eot)
        x = self.packed_features(*(t.to(device) for t in inputs))  # (R, Q, E)
        return x.reshape(-1, x.shape[-1])[pack.slots.to(device)]  # (T, E)

    def packed_features(self, tokens: Tensor, positions: Tensor, mask: Tensor, eot: Tensor) -> Tensor:
        """A pack's tensors (models.prefix.PrefixPack: tokens, positions (R, N), mask (R, 1, N, N), eot
        (R, Q)) -> projected features at every EOT slot (R, Q, E); padding slots hold junk. The graph the
        runtimes run for shared-prefix text encoding (apps.onnx_export.export_packed_text_tower)."""
        x = self.token_embedding(tokens)  # (R, N, W)
        x = x + self.positional_embedding[positions].to(x.dtype)
        x = self.transformer.forward_pooled(x, eot, mask=mask)  # (R, Q, W)
        return self.project(self.ln_final(x))  # (R, Q, E)
