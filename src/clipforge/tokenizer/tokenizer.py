"""The CLIP tokenizer: text -> (N, context_length) int64 ids, identical to open_clip.tokenize.

Fast where it can be without changing a single id:
- plain ASCII texts skip ftfy/HTML cleaning (see `clean.is_plain`);
- no word pattern match can contain a space, so a cleaned text's ids are the concatenation of the ids of
  its space-separated chunks: each distinct chunk ("dog,") goes through the regex and BPE once, then
  is a dict lookup (the regex alone would cost ~5x more than the whole lookup path);
- the output tensor is filled by numpy in one go.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import chain

import numpy as np
import torch

from clipforge.tokenizer.bpe import (
    END_OF_WORD,
    EOT_TOKEN_ID,
    SOT_TOKEN_ID,
    VOCAB_PATH,
    VOCAB_SIZE,
    BPEVocab,
    load_vocab,
    word_to_ids,
)
from clipforge.tokenizer.clean import WORD_PATTERN, clean_text, is_plain

DEFAULT_CONTEXT_LENGTH = 77


class _WordIds(dict):
    """word -> tuple of ids; a missing word is BPE-merged on first lookup and remembered."""

    def __init__(self, vocab: BPEVocab):
        super().__init__()
        self.vocab = vocab

    def __missing__(self, word: str) -> tuple[int, ...]:
        ids = self[word] = word_to_ids(word, self.vocab)
        return ids


class _ChunkIds(dict):
    """Space-free chunk of cleaned text -> tuple of ids, via the word pattern and the word cache."""

    def __init__(self, word_ids: _WordIds):
        super().__init__()
        self.word_ids = word_ids

    def __missing__(self, chunk: str) -> tuple[int, ...]:
        words = WORD_PATTERN.findall(chunk)
        ids = self[chunk] = tuple(chain.from_iterable(map(self.word_ids.__getitem__, words)))
        return ids


class Tokenizer:
    """OpenAI CLIP's byte-level BPE. `tok(texts)` -> LongTensor (N, context_length); picklable.

    `context_length` and `truncate` are the defaults for `__call__`. `cache_size` bounds the number of
    distinct words remembered (the cache is emptied when it grows past it).
    """

    sot_token_id = SOT_TOKEN_ID
    eot_token_id = EOT_TOKEN_ID
    vocab_size = VOCAB_SIZE

    def __init__(
        self,
        vocab_path: str | os.PathLike = VOCAB_PATH,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        truncate: bool = False,
        cache_size: int = 200_000,
    ):
        self.vocab_path = str(vocab_path)
        self.context_length = context_length
        self.truncate = truncate
        self.cache_size = cache_size
        self.vocab = load_vocab(self.vocab_path)
        self._word_ids = _WordIds(self.vocab)
        self._chunk_ids = _ChunkIds(self._word_ids)

    def __reduce__(self):  # rebuild from the file in a worker instead of pickling ~50k dict entries
        return Tokenizer, (self.vocab_path, self.context_length, self.truncate, self.cache_size)

    def __repr__(self) -> str:
        return f"Tokenizer(context_length={self.context_length}, truncate={self.truncate})"

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT/EOT."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """BPE ids of each text, without SOT/EOT."""
        lookup = self._chunk_ids.__getitem__
        out = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
            chunks = (text.lower() if is_plain(text) else clean_text(text)).split()
            out.append(list(chain.from_iterable(map(lookup, chunks))))
        if len(self._chunk_ids) + len(self._word_ids) > self.cache_size:
            self._chunk_ids.clear()
            self._word_ids.clear()
        return out

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text of `ids` as OpenAI decodes it (each word followed by a space, trailing space stripped).

        A leading SOT is skipped and decoding stops at the first EOT, so a padded row decodes cleanly.
        """
        if isinstance(ids, (torch.Tensor, np.ndarray)):
            ids = ids.tolist()
        tokens = []
        for token_id in ids:
            if token_id == EOT_TOKEN_ID:
                break
            if token_id != SOT_TOKEN_ID:
                tokens.append(self.vocab.id_to_token[int(token_id)])
        data = bytes(self.vocab.char_to_byte[c] for c in "".join(tokens))
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ").rstrip(" ")

    def __call__(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        truncate: bool | None = None,
    ) -> torch.Tensor:
        """(N, context_length) int64: SOT, ids, EOT, zero padding.

        A text longer than context_length - 2 ids raises ValueError unless `truncate`, which keeps the
        first context_length - 1 tokens and makes the last one EOT (as open_clip always does).
        """
        context_length = self.context_length if context_length is None else context_length
        truncate = self.truncate if truncate is None else truncate
        if isinstance(texts, str):
            texts = [texts]
        return pack_ids(self.encode_batch(texts), context_length, truncate)


def pack_ids(ids: list[list[int]], context_length: int, truncate: bool) -> torch.Tensor:
    """Rows of SOT + ids + EOT, zero-padded to context_length, built with numpy in one go."""
    if context_length < 2:
        raise ValueError(f"context_length={context_length}: must be >= 2 to hold SOT and EOT")
    room = context_length - 2
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    for index in np.flatnonzero(lengths > room):
        if not truncate:
            raise ValueError(
                f"text {index} is {lengths[index] + 2} tokens long with SOT/EOT, more than "
                f"context_length={context_length}; pass truncate=True to cut it"
            )
        ids[index] = ids[index][:room]
        lengths[index] = room
    out = np.zeros((len(ids), context_length), dtype=np.int64)
    out[:, 0] = SOT_TOKEN_ID
    columns = np.arange(context_length)
    body = (columns >= 1) & (columns <= lengths[:, None])  # (N, L): where the BPE ids go
    out[body] = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    out[np.arange(len(ids)), lengths + 1] = EOT_TOKEN_ID
    return torch.from_numpy(out)
