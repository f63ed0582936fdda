"""CLIP's BPE merges run by Hugging Face `tokenizers` (Rust) when it is installed.

Only the merge loop moves to Rust: cleaning and word splitting stay clipforge's (`clean.py`), so the ids are
those of the Python reference `bpe.word_to_ids` (the same lowest-rank-first merges of the same 48,894
pairs, checked against open_clip in tests/test_tokenizer.py). All new words of a batch go to Rust in one
call and come back as one flat id list, ~1-2 us per word instead of ~70 us: this is what makes a first
pass over unseen text (an empty cache) fast.

Long non-ASCII words (a CJK sentence without spaces is one word of ~30-90 bytes) cost Rust ~20-50 us each.
They are first cut into pieces at every character boundary that no merge can ever cross: a boundary
between byte x (the last of one character) and byte y (the first of the next) is never crossed when no
merged token contains x followed by y (`crossing_pairs`), because every symbol BPE builds is a merged
token. The pieces on either side of such a boundary then merge independently (no pair across it has a
rank), so a word's ids are the concatenation of its pieces' ids, only the last piece taking `</w>`. Most
CJK boundaries are such cuts, and pieces (one or two characters) repeat across words: each distinct piece
is merged once per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from itertools import chain

import numpy as np

from clipforge.tokenizer.bpe import END_OF_WORD, EOT_TEXT, SOT_TEXT, VOCAB_PATH, BPEVocab, load_vocab

MergeMany = Callable[[list[str]], list[tuple[int, ...]]]
_WORD_MARK, _PIECE_MARK = "\x00", "\x01"  # never in a word (cleaned text has no control characters)


def rust_available() -> bool:
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    return True


def crossing_pairs(vocab: BPEVocab) -> np.ndarray:
    """(256, 256) bool: [x, y] is True when some merged token holds byte x directly followed by byte y."""
    table = np.zeros((256, 256), dtype=bool)
    char_to_byte = vocab.char_to_byte
    for first, second in vocab.merges:
        data = np.frombuffer(
            bytes(map(char_to_byte.__getitem__, (first + second).removesuffix(END_OF_WORD))), np.uint8
        )
        table[data[:-1], data[1:]] = True
    return table


def split_pieces(words: list[str], crossing: np.ndarray) -> dict[str, list[str]]:
    """The non-ASCII words that can be cut at character boundaries no merge crosses (module docstring) ->
    their pieces (two or more). ASCII words are never cut (no ASCII letter pair is such a boundary)."""
    candidates = [word for word in words if not word.isascii()]
    joined = _WORD_MARK.join(candidates)
    if not candidates or _PIECE_MARK in joined or joined.count(_WORD_MARK) != len(candidates) - 1:
        return {}  # nothing to cut, or a word holds a marker (never in cleaned text): no cutting
    data = np.frombuffer(joined.encode("utf-8"), np.uint8)
    before, after = data[:-1], data[1:]
    cut = ((after & 0xC0) != 0x80) & (before != 0) & (after != 0) & ~crossing[before, after]
    positions = np.flatnonzero(cut) + 1  # byte offsets where a new piece starts (always a character start)
    if not len(positions):
        return {}
    marked = np.insert(data, positions, 1).tobytes().decode("utf-8").split(_WORD_MARK)
    return {word: text.split(_PIECE_MARK) for word, text in zip(candidates, marked) if _PIECE_MARK in text}


def _rust_bpe(vocab: BPEVocab, end_of_word: bool) -> Callable[[list[str]], dict[str, tuple[int, ...]]]:
    """words -> {word: ids} by one Rust BPE model (with `</w>` on each word's last symbol or without).

    Words are byte-mapped here (CLIP's byte -> printable-char table) for the whole batch in one
    `str.translate`, which is cheaper than the Rust ByteLevel step. With `</w>` the fast encoding (no
    offsets) is used and each word ends at its one `</w>` token."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models

    suffix = {"end_of_word_suffix": END_OF_WORD} if end_of_word else {}
    rust = RustTokenizer(models.BPE(dict(vocab.token_to_id), list(vocab.merges), cache_capacity=0, **suffix))
    table = str.maketrans({byte: char for byte, char in vocab.byte_to_char.items()})  # on latin-1 text
    mark = vocab.byte_to_char[ord(_WORD_MARK)]
    ends_word = np.array([vocab.id_to_token[i].endswith(END_OF_WORD) for i in range(len(vocab.id_to_token))])

    def ids_of(words: list[str]) -> dict[str, tuple[int, ...]]:
        if not words:
            return {}
        joined = _WORD_MARK.join(words)
        if joined.count(_WORD_MARK) == len(words) - 1:  # one translate for the batch
            mapped = joined.encode("utf-8").decode("latin-1").translate(table).split(mark)
        else:  # a word holds U+0000 (never in cleaned text)
            mapped = [w.encode("utf-8").decode("latin-1").translate(table) for w in words]
        if end_of_word:
            ids = rust.encode_batch_fast([mapped], is_pretokenized=True, add_special_tokens=False)[0].ids
            ends = (np.flatnonzero(ends_word[ids]) + 1).tolist()
        else:
            encoding = rust.encode(mapped, is_pretokenized=True, add_special_tokens=False)
            ids = encoding.ids
            ends = np.cumsum(np.bincount(np.asarray(encoding.word_ids), minlength=len(words))).tolist()
        return {w: tuple(ids[a:b]) for w, a, b in zip(words, [0, *ends[:-1]], ends)}

    return ids_of


@lru_cache(maxsize=4)
def _rust_models(path: str):
    """(final-piece ids, inner-piece ids, crossing_pairs, special words) for the merges file at `path`."""
    vocab = load_vocab(path)
    special = {SOT_TEXT: (vocab.token_to_id[SOT_TEXT],), EOT_TEXT: (vocab.token_to_id[EOT_TEXT],)}
    return (
        _rust_bpe(vocab, end_of_word=True),
        _rust_bpe(vocab, end_of_word=False),
        crossing_pairs(vocab),
        special,
    )


class RustMergeMany:
    """words -> ids of each, by Rust BPE models of the merges file at `path` (built once per path, ~0.5 s).

    Words are byte-mapped by the Rust ByteLevel step (CLIP's byte -> printable-char table, no splitting)
    and merged with `</w>` on the last symbol, exactly as `bpe.word_to_ids`; pieces that end before their
    word's end (module docstring) by a second model without `</w>`. The Rust models keep no cache; the
    pieces of cut words are remembered here, per instance (one per `Tokenizer`, so a fresh tokenizer really
    starts cold), and forgotten past `cache_size`. Raises ImportError without `tokenizers`.
    """

    def __init__(self, path: str = str(VOCAB_PATH), cache_size: int = 200_000):
        self._final_ids, self._inner_ids, self._crossing, self._special = _rust_models(path)
        self.cache_size = cache_size
        self._final: dict[str, tuple[int, ...]] = {}  # last piece of a cut word -> ids (with </w>)
        self._inner: dict[str, tuple[int, ...]] = {}  # any other piece -> ids (no </w>)

    def __call__(self, words: list[str]) -> list[tuple[int, ...]]:
        special = self._special
        plain = [w for w in words if w not in special]
        cut = split_pieces(plain, self._crossing)
        if len(self._final) + len(self._inner) > self.cache_size:
            self._final, self._inner = {}, {}
        final, inner = self._final, self._inner
        new_final = [p[-1] for p in cut.values() if p[-1] not in final]
        new_inner = [q for p in cut.values() for q in p[:-1] if q not in inner]
        merged = self._final_ids(list(dict.fromkeys(chain((w for w in plain if w not in cut), new_final))))
        final.update((piece, merged[piece]) for piece in new_final)
        inner.update(self._inner_ids(list(dict.fromkeys(new_inner))))
        for word, pieces in cut.items():
            merged[word] = (*chain.from_iterable(map(inner.__getitem__, pieces[:-1])), *final[pieces[-1]])
        return [special[w] if w in special else merged[w] for w in words]
