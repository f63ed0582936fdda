"""Bulk text encoding: shared prefixes computed once (or length-sorted batches), input order restored."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from clipforge.models import CLIP
from clipforge.models.prefix import pack_prefixes


def length_sorted_batches(tokens: Tensor, batch_size: int) -> list[Tensor]:
    """Index batches of rows sorted by sequence length (EOT position), so each batch is trimmed tightly."""
    lengths = (tokens != 0).sum(dim=-1)  # zero padding (CLIP BPE; BERT's [PAD] is 0 too)
    order = torch.argsort(lengths, stable=True)
    return list(order.split(batch_size))


@torch.inference_mode()
def encode_tokens(
    model: CLIP,
    tokens: Tensor,
    batch_size: int = 256,
    normalize: bool = True,
    progress: bool = False,
    share_prefixes: bool = True,
) -> Tensor:
    """(N, L) token ids -> (N, E) features in input order. Texts that start alike share the computation of
    their common prefix (models.prefix); `share_prefixes=False` encodes length-sorted padded batches."""
    out = torch.empty(tokens.shape[0], model.config.embed_dim, dtype=torch.float32)
    if share_prefixes and getattr(model.text, "shares_prefixes", False):  # exact only for causal EOT towers
        bar = tqdm(total=tokens.shape[0], desc="encode text", disable=not progress, unit="text")
        forward = (
            getattr(model, "encode_packed", None) or model.text.forward_packed
        )  # apps.backend's runtimes
        for pack in pack_prefixes(tokens, texts_per_batch=batch_size):
            features = forward(pack)
            out[pack.texts] = (F.normalize(features, dim=-1) if normalize else features).float().cpu()
            bar.update(len(pack.texts))
        bar.close()
        return out
    device = next(model.parameters()).device
    batches = length_sorted_batches(tokens, batch_size)
    for index in tqdm(batches, desc="encode text", disable=not progress, unit="batch"):
        out[index] = model.encode_text(tokens[index].to(device), normalize=normalize).float().cpu()
    return out


def encode_texts(
    model: CLIP, texts: Sequence[str], batch_size: int = 256, normalize: bool = True, progress: bool = False
) -> Tensor:
    """Texts -> (N, E) features in input order, tokenised with the model's context length."""
    from clipforge.tokenizer import tokenizer_for

    tokens = tokenizer_for(model)(list(texts))
    return encode_tokens(model, tokens, batch_size, normalize, progress)
