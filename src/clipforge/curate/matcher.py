"""Aho-Corasick query matching on normalised captions, aware of word boundaries.

Captions and queries go through the same `normalize_text`: NFKC, casefold, every run of characters that
are not letters or digits (any script) becomes one space. The automaton holds each query padded with a
space on both sides and scans the caption padded the same way, so a hit is always a whole-word sequence:
"cat" matches "a cat." but not "concatenate". Scripts written without spaces (Chinese, Japanese, Thai)
have no word boundaries to find; build the matcher with `word_boundary=False` for plain substrings.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

import ahocorasick
import regex

# Letters, marks (Devanagari vowel signs, Arabic harakat) and digits of every script are word characters.
_NON_WORD = regex.compile(r"[^\p{L}\p{M}\p{N}]+")


def normalize_text(text: str) -> str:
    """'A  Cat-like DOG!' -> 'a cat like dog' (letters and digits of any script survive)."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


class QueryMatcher:
    """Finds which of up to millions of queries occur in a caption; ids index `self.queries`."""

    def __init__(self, queries: Sequence[str], word_boundary: bool = True):
        self.word_boundary = word_boundary
        self.queries: list[str] = []
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for position, query in enumerate(queries):
            normalised = normalize_text(query)
            if not normalised:
                raise ValueError(f"query #{position} ({query!r}) is empty after normalisation")
            key = self._pad(normalised)
            if automaton.exists(key):
                raise ValueError(
                    f"query #{position} ({query!r}) duplicates an earlier query after normalisation"
                )
            automaton.add_word(key, len(self.queries))
            self.queries.append(normalised)
        if not self.queries:
            raise ValueError("the query list is empty")
        automaton.make_automaton()
        self._automaton = automaton

    def _pad(self, normalised: str) -> str:
        return f" {normalised} " if self.word_boundary else normalised

    def __len__(self) -> int:
        return len(self.queries)

    def match_normalized(self, normalised_caption: str) -> list[int]:
        """Sorted distinct query ids found in an already-normalised caption."""
        if not normalised_caption:
            return []
        hits = {query_id for _, query_id in self._automaton.iter(self._pad(normalised_caption))}
        return sorted(hits)

    def match(self, caption: str) -> list[int]:
        return self.match_normalized(normalize_text(caption))

    def match_many(self, captions: Iterable[str]) -> list[list[int]]:
        return [self.match(caption) for caption in captions]


def brute_force_matches(queries: Sequence[str], caption: str, word_boundary: bool = True) -> list[int]:
    """Reference for tests: the ids of queries whose normalised text occurs in the normalised caption."""
    text = normalize_text(caption)
    if not text:
        return []
    found = []
    for query_id, query in enumerate(queries):
        q = normalize_text(query)
        if (f" {q} " in f" {text} ") if word_boundary else (q in text):
            found.append(query_id)
    return found
