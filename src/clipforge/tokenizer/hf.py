"""Hugging Face tokenizers (a `tokenizer.json`, e.g. BERT WordPiece) behind the CLIP tokenizer's interface.

Used for text towers of kind "hf": `HFTokenizer(folder)(texts)` -> (N, context_length) int64 ids with the
tokenizer's own special tokens ([CLS] ... [SEP]) and right padding with its pad id, as the encoder expects.
Only the `tokenizers` package is needed (no transformers import).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class HFTokenizer:
    """`tok(texts)` -> LongTensor (N, context_length); picklable (rebuilt from the file in a worker)."""

    def __init__(self, path: str | os.PathLike, context_length: int = 77, truncate: bool = True):
        from tokenizers import Tokenizer as _Fast

        path = Path(path)
        self.path = path / "tokenizer.json" if path.is_dir() else path
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no tokenizer.json (a Hugging Face tokenizer file)")
        self.context_length = context_length
        self.truncate = truncate
        self._fast = _Fast.from_file(str(self.path))
        self._fast.no_padding()
        self._fast.no_truncation()
        self.pad_token_id = self._pad_id()
        self.vocab_size = self._fast.get_vocab_size()

    def _pad_id(self) -> int:
        for token in ("[PAD]", "<pad>", "<|pad|>"):
            token_id = self._fast.token_to_id(token)
            if token_id is not None:
                return int(token_id)
        return 0

    def __reduce__(self):
        return HFTokenizer, (self.path, self.context_length, self.truncate)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path.parent.name!r}, context_length={self.context_length})"

    def encode(self, text: str) -> list[int]:
        """Ids of one text, special tokens included."""
        return list(self._fast.encode(text).ids)

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._fast.decode([int(i) for i in ids], skip_special_tokens=True)

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None, truncate: bool | None = None
    ) -> torch.Tensor:
        """(N, context_length) int64. Too-long texts raise ValueError unless `truncate`, which keeps the
        first context_length - 1 ids and ends the row with the last special token (e.g. [SEP])."""
        context_length = self.context_length if context_length is None else context_length
        truncate = self.truncate if truncate is None else truncate
        if isinstance(texts, str):
            texts = [texts]
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        out = np.full((len(texts), context_length), self.pad_token_id, dtype=np.int64)
        for row, encoding in enumerate(self._fast.encode_batch(list(texts))):
            ids = encoding.ids
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(
                        f"text {row} is {len(ids)} tokens long, more than context_length={context_length}; "
                        "pass truncate=True to cut it"
                    )
                ids = ids[: context_length - 1] + ids[-1:]
            out[row, : len(ids)] = ids
        return torch.from_numpy(out)
