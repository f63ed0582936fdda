"""OpenAI CLIP's byte-level BPE vocabulary: byte -> printable-char map, 48,894 merges, 49,408 ids.

Id layout (identical to OpenAI's): 0-255 the single byte-chars, 256-511 the same with the end-of-word
marker `</w>`, 512-49405 one id per merge in rank order, 49406/49407 start/end of text.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
NUM_MERGES = 49152 - 256 - 2  # OpenAI keeps only the first 48,894 merges of the file
SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
VOCAB_SIZE = 49408
END_OF_WORD = "</w>"
# open_clip's spelling; literal occurrences in a text become the special ids, as in open_clip.
SOT_TEXT = "<start_of_text>"
EOT_TEXT = "<end_of_text>"


def byte_to_char() -> dict[int, str]:
    """Each byte -> one visible character, so BPE never sees whitespace or control bytes.

    The 188 printable Latin-1 bytes stand for themselves; the other 68 take U+0100, U+0101, ... in byte
    order. Insertion order (printable first) is the order of ids 0-255.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    mapping = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in mapping)
    mapping.update({b: chr(256 + i) for i, b in enumerate(shifted)})
    return mapping


@dataclass(frozen=True)
class BPEVocab:
    """Everything the tokenizer needs from the merges file."""

    merges: tuple[tuple[str, str], ...]  # rank order
    ranks: dict[tuple[str, str], int]
    token_to_id: dict[str, int]
    id_to_token: dict[int, str]
    byte_to_char: dict[int, str]
    char_to_byte: dict[str, int]


def read_merges(path: str | os.PathLike = VOCAB_PATH) -> tuple[tuple[str, str], ...]:
    """The first NUM_MERGES merge pairs of a gzipped merges file (line 1 is a version header)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : NUM_MERGES + 1]
    merges = []
    for number, line in enumerate(lines, start=2):
        pair = line.split()
        if len(pair) != 2:
            raise ValueError(f"{path}:{number}: expected a merge 'a b', got {line!r}")
        merges.append((pair[0], pair[1]))
    if len(merges) != NUM_MERGES:
        raise ValueError(f"{path}: has {len(merges)} merges, CLIP's vocabulary needs {NUM_MERGES}")
    return tuple(merges)


@lru_cache(maxsize=4)
def load_vocab(path: str = str(VOCAB_PATH)) -> BPEVocab:
    """Build (and memoise per path) the vocabulary from a merges file."""
    merges = read_merges(path)
    chars = byte_to_char()
    tokens = [*chars.values(), *(c + END_OF_WORD for c in chars.values()), *("".join(m) for m in merges)]
    tokens += [SOT_TEXT, EOT_TEXT]
    token_to_id = {token: i for i, token in enumerate(tokens)}
    if len(token_to_id) != VOCAB_SIZE:
        raise ValueError(f"{path}: vocabulary has {len(token_to_id)} distinct tokens, expected {VOCAB_SIZE}")
    return BPEVocab(
        merges=merges,
        ranks={pair: rank for rank, pair in enumerate(merges)},
        token_to_id=token_to_id,
        id_to_token={i: token for token, i in token_to_id.items()},
        byte_to_char=chars,
        char_to_byte={c: b for b, c in chars.items()},
    )


def merge_symbols(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges to a word, lowest rank first, each pass joining all its non-overlapping pairs."""
    while len(symbols) > 1:
        pairs = zip(symbols, symbols[1:])
        best = min(pairs, key=lambda pair: ranks.get(pair, NUM_MERGES))
        if best not in ranks:
            break
        first, second = best
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def word_to_ids(word: str, vocab: BPEVocab) -> tuple[int, ...]:
    """Ids of one pre-tokenised word (a regex match of the cleaned text)."""
    if word in (SOT_TEXT, EOT_TEXT):
        return (vocab.token_to_id[word],)
    symbols = [vocab.byte_to_char[b] for b in word.encode("utf-8")]
    symbols[-1] += END_OF_WORD
    return tuple(vocab.token_to_id[s] for s in merge_symbols(symbols, vocab.ranks))
