"""The CLIP tokenizer: text -> (N, context_length) int64 ids, identical to open_clip.tokenize.

Fast where it can be without changing a single id:
- texts that ftfy/HTML cleaning provably leaves unchanged skip it (`clean.clean_lower`: plain ASCII, and
  most non-ASCII text: CJK, accents, emoji);
- no word pattern match can contain a space, so a cleaned text's ids are the concatenation of the ids of
  its space-separated chunks: each distinct chunk ("dog,") goes through the regex and BPE once, then
  is a dict lookup (the regex alone would cost ~5x more than the whole lookup path);
- a new word is BPE-merged in Rust (`rust_bpe`, HF `tokenizers`) when installed, so a first pass over unseen
  text (an empty cache) is nearly as fast as a warm one;
- a truncated text stops after the chunks that fill its context (each chunk gives at least one id);
- the output tensor is filled by numpy in one go;
- the garbage collector is paused while a batch is encoded: the batch allocates many small lists and
  tuples that all stay alive, so every collection it would trigger finds nothing and scans the whole heap
  (torch's included), which cost up to 40 % of a cold pass.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from typing import Literal

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
from clipforge.tokenizer.clean import WORD_PATTERN, clean_lower
from clipforge.tokenizer.rust_bpe import rust_available, rust_merge_many

DEFAULT_CONTEXT_LENGTH = 77


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _python_merge_many(vocab: BPEVocab) -> Callable[[list[str]], list[tuple[int, ...]]]:
    return lambda words: [word_to_ids(word, vocab) for word in words]


class Tokenizer:
    """OpenAI CLIP's byte-level BPE. `tok(texts)` -> LongTensor (N, context_length); picklable.

    `context_length` and `truncate` are the defaults for `__call__`. `cache_size` bounds the number of
    distinct words remembered (the cache is emptied when it grows past it). `bpe` picks who merges new
    words: "rust" (HF `tokenizers`), "python" (`bpe.word_to_ids`) or "auto" (rust when installed); the ids
    are the same.
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
        bpe: Literal["auto", "rust", "python"] = "auto",
    ):
        if bpe not in ("auto", "rust", "python"):
            raise ValueError(f"bpe={bpe!r}: expected 'auto', 'rust' or 'python'")
        if bpe == "rust" and not rust_available():
            raise ImportError("bpe='rust' needs the `tokenizers` package (pip install tokenizers)")
        self.vocab_path = str(vocab_path)
        self.context_length = context_length
        self.truncate = truncate
        self.cache_size = cache_size
        self.bpe = "rust" if bpe == "rust" or (bpe == "auto" and rust_available()) else "python"
        self.vocab = load_vocab(self.vocab_path)
        rust = self.bpe == "rust"
        self._merge_many = rust_merge_many(self.vocab_path) if rust else _python_merge_many(self.vocab)
        self._word_ids: dict[str, tuple[int, ...]] = {}  # word (a regex match) -> its ids
        self._chunk_ids: dict[str, tuple[int, ...]] = {}  # whitespace-free chunk of cleaned text -> ids

    def __reduce__(self):  # rebuild from the file in a worker instead of pickling ~50k dict entries
        return Tokenizer, (self.vocab_path, self.context_length, self.truncate, self.cache_size, self.bpe)

    def __repr__(self) -> str:
        return f"Tokenizer(context_length={self.context_length}, truncate={self.truncate})"

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT/EOT."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str], max_chunks: int | None = None) -> list[list[int]]:
        """BPE ids of each text, without SOT/EOT. With `max_chunks`, a text's ids may stop after its first
        `max_chunks` whitespace-separated chunks, once they gave >= max_chunks ids (a truncated row's worth:
        a chunk gives at least one id, except a lone U+0345, which the word pattern skips)."""
        with _gc_paused():
            return self._encode_batch(texts, max_chunks)

    def _encode_batch(self, texts: Sequence[str], max_chunks: int | None) -> list[list[int]]:
        chunk_lists, cut = [], []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
            chunks = clean_lower(text).split()
            if max_chunks is not None and len(chunks) > max_chunks:
                del chunks[max_chunks:]
                cut.append(index)
            chunk_lists.append(chunks)
        known = self._chunk_ids
        try:
            out = [list(chain.from_iterable(map(known.__getitem__, chunks))) for chunks in chunk_lists]
        except KeyError:  # new chunks: learn all of the batch's at once, then look up again
            self._learn({chunk for chunks in chunk_lists for chunk in chunks if chunk not in known})
            out = [list(chain.from_iterable(map(known.__getitem__, chunks))) for chunks in chunk_lists]
        for index in cut:
            if len(out[index]) < max_chunks:  # a chunk without ids was cut short: encode the whole text
                out[index] = self._encode_batch([texts[index]], None)[0]
        if len(self._chunk_ids) + len(self._word_ids) > self.cache_size:
            self._chunk_ids.clear()
            self._word_ids.clear()
        return out

    def _learn(self, chunks: set[str]) -> None:
        """Add `chunks` to the chunk cache: split by the word pattern, new words merged in one call."""
        chunk_list = list(chunks)
        words = [WORD_PATTERN.findall(chunk) for chunk in chunk_list]
        word_ids = self._word_ids
        new = list(dict.fromkeys(w for chunk_words in words for w in chunk_words if w not in word_ids))
        if new:
            word_ids.update(zip(new, self._merge_many(new)))
        for chunk, chunk_words in zip(chunk_list, words):
            self._chunk_ids[chunk] = tuple(chain.from_iterable(map(word_ids.__getitem__, chunk_words)))

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
        max_chunks = max(context_length - 2, 0) if truncate else None  # the ids a row can hold
        return pack_ids(self.encode_batch(texts, max_chunks), context_length, truncate)


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
