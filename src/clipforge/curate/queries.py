"""Query lists: read a user's file, or build one from word lists plus the corpus's own frequent n-grams.

WIT's 500,000 queries were every word occurring at least 100 times in English Wikipedia, high-PMI
bigrams, Wikipedia article titles and WordNet synsets. `build_queries` is the same recipe on what a
user has at hand:

1. every entry of the given word lists (class names, a vocabulary, titles: one per line), kept whole;
2. corpus words seen at least `min_count` times, stop words excluded;
3. corpus n-grams (2..`max_ngram` words) seen at least `min_count` times whose pointwise mutual
   information log(p(w1..wn) / (p(w1)...p(wn))) is at least `min_pmi` and that neither start nor end
   with a stop word ("on the" is not a concept, "hot dog" is).

Only the first `max_captions` captions are counted, so memory stays bounded on any corpus; corpus
queries are ranked by count and cut at `max_queries` (word lists always come first).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from clipforge.curate.matcher import normalize_text
from clipforge.fileio import atomic_write_text

# A short English list; pass your own for other languages (build_queries(stop_words=...)).
_STOP_WORDS_TEXT = (
    "a an and are as at be by for from has have in is it its of on or that the this to was were with "
    "there their they he she his her him them i you we our your my me some two three one while other "
    "into onto near next up down out over under very"
)
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


def load_queries(path: str | os.PathLike) -> list[str]:
    """One query per line (UTF-8); blank lines and lines starting with '#' are skipped. Queries are
    normalised like captions and de-duplicated, first occurrence kept."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"query file {path} not found")
    seen: set[str] = set()
    queries: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            query = normalize_text(line)
            if query and query not in seen:
                seen.add(query)
                queries.append(query)
    if not queries:
        raise ValueError(f"{path}: no queries (one per line expected)")
    return queries


def save_queries(path: str | os.PathLike, queries: Sequence[str]) -> Path:
    return atomic_write_text(path, "".join(f"{q}\n" for q in queries))


def build_queries(
    captions: Iterable[str],
    word_lists: Sequence[Iterable[str]] = (),
    min_count: int = 100,
    max_ngram: int = 2,
    min_pmi: float = 3.0,
    max_queries: int = 500_000,
    max_captions: int = 10_000_000,
    stop_words: frozenset[str] = STOP_WORDS,
) -> list[str]:
    """Word-list entries first, then corpus words and high-PMI n-grams by descending count."""
    queries: list[str] = []
    seen: set[str] = set()
    for words in word_lists:
        for entry in words:
            query = normalize_text(entry)
            if query and query not in seen:
                seen.add(query)
                queries.append(query)
    counts: list[Counter] = [Counter() for _ in range(max_ngram + 1)]
    for index, caption in enumerate(captions):
        if index >= max_captions:
            break
        words = normalize_text(caption).split()
        for n in range(1, max_ngram + 1):
            counts[n].update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    total_words = max(1, sum(counts[1].values()))
    candidates: list[tuple[int, str]] = []
    for word, count in counts[1].items():
        if count >= min_count and word not in stop_words:
            candidates.append((count, word))
    for n in range(2, max_ngram + 1):
        total_ngrams = max(1, sum(counts[n].values()))
        for ngram, count in counts[n].items():
            words = ngram.split()
            if count < min_count or words[0] in stop_words or words[-1] in stop_words:
                continue
            log_joint = math.log(count / total_ngrams)
            log_independent = sum(math.log(counts[1][w] / total_words) for w in words)
            if log_joint - log_independent >= min_pmi:
                candidates.append((count, ngram))
    candidates.sort(key=lambda item: (-item[0], item[1]))
    for _, query in candidates:
        if len(queries) >= max_queries:
            break
        if query not in seen:
            seen.add(query)
            queries.append(query)
    return queries[:max_queries]
