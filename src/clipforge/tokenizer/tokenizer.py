"""The CLIP tokenizer: text -> (N, context_length) int64 ids, identical to open_clip.tokenize.

Fast where it can be without changing a single id:
- texts that ftfy/HTML cleaning provably leaves unchanged skip it (`clean.clean_lower`: plain ASCII, and
  most non-ASCII text: CJK, accents, emoji); a batch of plain texts, or of texts that all pass the
  non-ASCII test (`clean.all_ftfy_unchanged`, one pass over the batch), is checked and lower-cased in one go;
- no word pattern match can contain whitespace, so a cleaned text's ids are the concatenation of the ids of
  its whitespace-separated chunks: each distinct chunk ("dog,") goes through the regex and BPE once, then
  is a dict lookup. A whole batch is one string (texts joined by a separator chunk) split once and looked
  up with `map` + `chain` + `np.fromiter` in C: no Python loop per text or per chunk;
- the new chunks of a batch are learned together: split into words by one regex pass over all of them,
  their new words BPE-merged in one call to Rust (`rust_bpe`, HF `tokenizers`) when installed (long CJK
  words cut first at boundaries no merge crosses), so a first pass over unseen text (empty caches) is
  nearly as fast as a warm one;
- a truncated long text stops after the chunks that can fill its row (a chunk gives at least one id);
- the output tensor is filled by numpy in one go;
- the garbage collector is paused while a batch is encoded: the batch allocates many small tuples that all
  stay alive, so every collection it would trigger finds nothing and scans the whole heap (torch's
  included), which cost up to 40 % of a cold pass.
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

from clipforge.extras import require
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
from clipforge.tokenizer.clean import WORD_PATTERN, all_ftfy_unchanged, clean_lower
from clipforge.tokenizer.rust_bpe import RustMergeMany, rust_available

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


SEPARATOR = "\x00"  # the chunk between texts of a joined batch; never in a cleaned text (see _clean)
_SEPARATOR_IDS = (-1,)


class Tokenizer:
    """OpenAI CLIP's byte-level BPE. `tok(texts)` -> LongTensor (N, context_length); picklable.

    `context_length` and `truncate` are the defaults for `__call__`. `cache_size` bounds the number of
    distinct words and chunks remembered (the caches are emptied when they grow past it). `bpe` picks who
    merges new words: "rust" (HF `tokenizers`), "python" (`bpe.word_to_ids`) or "auto" (rust when
    installed); the ids are the same.
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
        if bpe == "rust":
            require("tokenizers", "Tokenizer(bpe='rust')")
        self.vocab_path = str(vocab_path)
        self.context_length = context_length
        self.truncate = truncate
        self.cache_size = cache_size
        self.bpe = "rust" if bpe == "rust" or (bpe == "auto" and rust_available()) else "python"
        self.vocab = load_vocab(self.vocab_path)
        rust = self.bpe == "rust"
        self._merge_many = (
            RustMergeMany(self.vocab_path, cache_size) if rust else _python_merge_many(self.vocab)
        )
        self._word_ids: dict[str, tuple[int, ...]] = {SEPARATOR: _SEPARATOR_IDS}  # word (regex match) -> ids
        self._chunk_ids: dict[str, tuple[int, ...]] = {SEPARATOR: _SEPARATOR_IDS}  # chunk -> ids

    def __reduce__(self):  # rebuild from the file in a worker instead of pickling ~50k dict entries
        return Tokenizer, (self.vocab_path, self.context_length, self.truncate, self.cache_size, self.bpe)

    def __repr__(self) -> str:
        return f"Tokenizer(context_length={self.context_length}, truncate={self.truncate})"

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT/EOT."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """BPE ids of each text, without SOT/EOT."""
        ids, lengths = self._encode_flat(texts, None)
        return [row.tolist() for row in np.split(ids, np.cumsum(lengths)[:-1])] if len(lengths) else []

    def _encode_flat(self, texts: Sequence[str], max_chunks: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(all texts' ids concatenated, each text's number of ids). With `max_chunks`, a long text may stop
        after its first `max_chunks` chunks, once they gave >= max_chunks ids (a truncated row's worth)."""
        if not len(texts):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        with _gc_paused():
            cleaned, lowered, cut = self._clean(texts, max_chunks)
            joined = " \x00 ".join(cleaned) + " \x00"
            ids = self._lookup((joined.lower() if lowered else joined).split())
            if len(self._chunk_ids) + len(self._word_ids) > self.cache_size:
                self._chunk_ids = {SEPARATOR: _SEPARATOR_IDS}
                self._word_ids = {SEPARATOR: _SEPARATOR_IDS}
        ends = np.flatnonzero(ids < 0)
        if len(ends) != len(cleaned):
            raise RuntimeError(f"{len(ends)} text separators in a batch of {len(cleaned)}: a tokenizer bug")
        lengths = np.diff(ends, prepend=-1) - 1
        if max_chunks is not None and len(cut) and (lengths[cut] < max_chunks).any():
            return self._encode_flat(texts, None)  # a chunk without ids (a lone U+0345) was cut: redo in full
        return ids[ids >= 0], lengths

    @staticmethod
    def _clean(texts: Sequence[str], max_chunks: int | None) -> tuple[list[str], bool, np.ndarray]:
        """(cleaned texts, whether they still need lower-casing, indices of the texts cut to max_chunks).

        No cleaned text holds U+0000: plain texts are printable, and ftfy removes it (`clean_lower`)."""
        try:
            raw = "".join(texts)
        except TypeError:
            index, bad = next((i, t) for i, t in enumerate(texts) if not isinstance(t, str))
            raise TypeError(f"texts[{index}] is {type(bad).__name__}, expected str") from None
        plain = raw.isascii() and raw.isprintable() and "&" not in raw
        if plain or all_ftfy_unchanged(texts):  # no text changes under cleaning: lower them all at once
            cleaned, lowered = list(texts), True
        else:
            cleaned, lowered = [clean_lower(text) for text in texts], False
        cut = []
        if max_chunks is not None:  # > max_chunks chunks needs > 2 * max_chunks characters
            long = np.flatnonzero(np.fromiter(map(len, cleaned), np.int64, len(cleaned)) > 2 * max_chunks)
            for index in long.tolist():
                parts = cleaned[index].split(maxsplit=max_chunks)
                if len(parts) > max_chunks:
                    cleaned[index] = " ".join(parts[:max_chunks])
                    cut.append(index)
        return cleaned, lowered, np.array(cut, dtype=np.int64)

    def _lookup(self, chunks: list[str]) -> np.ndarray:
        """The ids of `chunks`, concatenated; chunks not seen before are learned first."""
        known = self._chunk_ids
        try:
            return np.fromiter(chain.from_iterable(map(known.__getitem__, chunks)), np.int64)
        except KeyError:
            self._learn(set(chunks).difference(known))
            return np.fromiter(chain.from_iterable(map(known.__getitem__, chunks)), np.int64)

    def _learn(self, chunks: set[str]) -> None:
        """Add `chunks` to the chunk cache: all split by the word pattern in one pass (joined by separator
        chunks: no match spans whitespace), new words merged in one call, ids cut per chunk with numpy."""
        chunk_list = list(chunks)
        words = WORD_PATTERN.findall(
            " \x00 ".join(chunk_list) + " \x00"
        )  # each chunk's words, then SEPARATOR
        word_ids = self._word_ids
        new = [w for w in dict.fromkeys(words) if w not in word_ids]
        if new:
            word_ids.update(zip(new, self._merge_many(new)))
        ids = np.fromiter(chain.from_iterable(map(word_ids.__getitem__, words)), np.int64)
        ends = np.flatnonzero(ids < 0)
        if len(ends) != len(chunk_list):
            raise RuntimeError(f"{len(ends)} separators for {len(chunk_list)} chunks: a tokenizer bug")
        flat = ids.tolist()
        spans = map(slice, [0, *(ends[:-1] + 1).tolist()], ends.tolist())
        self._chunk_ids.update(zip(chunk_list, map(tuple, map(flat.__getitem__, spans))))

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
        if context_length < 2:
            raise ValueError(f"context_length={context_length}: must be >= 2 to hold SOT and EOT")
        if isinstance(texts, str):
            texts = [texts]
        ids, lengths = self._encode_flat(texts, context_length - 2 if truncate else None)
        return pack_ids(ids, lengths, context_length, truncate)


def pack_ids(ids: np.ndarray, lengths: np.ndarray, context_length: int, truncate: bool) -> torch.Tensor:
    """Rows of SOT + ids + EOT, zero-padded to context_length, built with numpy in one go.
    ids: all texts' ids concatenated; lengths: each text's count."""
    room = context_length - 2
    over = np.flatnonzero(lengths > room)
    if len(over) and not truncate:
        raise ValueError(
            f"text {over[0]} is {lengths[over[0]] + 2} tokens long with SOT/EOT, more than "
            f"context_length={context_length}; pass truncate=True to cut it"
        )
    kept = np.minimum(lengths, room)
    if len(over):  # the first `room` ids of each text
        starts = np.repeat(np.cumsum(lengths) - lengths, kept)
        ids = ids[starts + np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)]
    out = np.zeros((len(lengths), context_length), dtype=np.int64)
    out[:, 0] = SOT_TOKEN_ID
    columns = np.arange(context_length)
    out[(columns >= 1) & (columns <= kept[:, None])] = ids  # (N, L) mask of the body, row-major
    out[np.arange(len(lengths)), kept + 1] = EOT_TOKEN_ID
    return torch.from_numpy(out)
