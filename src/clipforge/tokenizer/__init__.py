"""OpenAI CLIP's byte-level BPE tokenizer (ids identical to open_clip.tokenize), with a fast path."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from clipforge.tokenizer.bpe import EOT_TOKEN_ID, SOT_TOKEN_ID, VOCAB_PATH, VOCAB_SIZE
from clipforge.tokenizer.hf_export import write_hf_tokenizer_files
from clipforge.tokenizer.select import tokenizer_for
from clipforge.tokenizer.tokenizer import DEFAULT_CONTEXT_LENGTH, Tokenizer


@lru_cache(maxsize=8)
def default_tokenizer(context_length: int = DEFAULT_CONTEXT_LENGTH) -> Tokenizer:
    """The one shared tokenizer for texts fed to a model with this context length: long texts are truncated
    (the last kept token is EOT), as open_clip's. Built on first use per length (the BPE vocabulary is loaded
    once); picklable, so DataLoader workers rebuild it from the vocabulary file.

    Pass `model.context_length` for a model's text tower; `tokenize` uses the 77-token one with
    `truncate=False` unless told otherwise."""
    return Tokenizer(context_length=context_length, truncate=True)


def tokenize(
    texts: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH, truncate: bool = False
) -> torch.Tensor:
    """openai/CLIP's `tokenize`: (N, context_length) int64 ids, SOT/EOT added, zero-padded.

    Too-long texts raise ValueError unless `truncate=True` (then the last kept token is EOT).
    """
    return default_tokenizer(context_length)(texts, truncate=truncate)


def get_tokenizer(name=None):
    """The tokenizer for a preset name, a CLIPConfig or a model, callable like open_clip's: OpenAI's BPE,
    or for an HF text tower (text.kind="hf") its own tokenizer.json (`clipforge.tokenizer.hf`).

    Like open_clip's, it uses the model's context length and truncates long texts by default.
    """
    if name is None:
        return default_tokenizer(DEFAULT_CONTEXT_LENGTH)
    from clipforge.models.config import CLIPConfig, get_config

    config = (
        get_config(name) if isinstance(name, str) else name if isinstance(name, CLIPConfig) else name.config
    )
    return tokenizer_for(config)


__all__ = [
    "DEFAULT_CONTEXT_LENGTH",
    "EOT_TOKEN_ID",
    "SOT_TOKEN_ID",
    "VOCAB_PATH",
    "VOCAB_SIZE",
    "Tokenizer",
    "default_tokenizer",
    "get_tokenizer",
    "tokenize",
    "tokenizer_for",
    "write_hf_tokenizer_files",
]
