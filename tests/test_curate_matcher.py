"""Matching finds exactly what a brute-force whole-word search finds."""

from __future__ import annotations

import csv
import gzip
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipforge.curate.matcher import QueryMatcher, brute_force_matches, normalize_text
from clipforge.curate.queries import build_queries

WORDS = ["a", "ab", "b", "ba", "cat", "cats", "dog", "hot", "hot dog", "ça", "日本", "x1"]
SEPARATORS = [" ", "  ", ", ", "-", ".", "!", "_", "\t"]


def test_normalize_text():
    assert normalize_text("  A Hot-DOG, on\ta PLATE!! ") == "a hot dog on a plate"
    assert normalize_text("Ｆｕｌｌ width Straße") == "full width strasse"
    assert normalize_text("नमस्ते दुनिया") == "नमस्ते दुनिया"  # vowel signs are marks, kept inside words


def test_fixed_cases():
    queries = ["cat", "hot dog", "dog", "a cat", "on", "concat"]
    matcher = QueryMatcher(queries)
    assert [matcher.queries[i] for i in matcher.match("A cat, eating a HOT-dog.")] == [
        "cat",
        "hot dog",
        "dog",
        "a cat",
    ]
    assert matcher.match("concatenate the hotdogs") == []
    assert matcher.match("put it on") == [4]
    assert matcher.match("") == [] and matcher.match("!!!") == []
    substring = QueryMatcher(queries, word_boundary=False)
    assert [substring.queries[i] for i in substring.match("concatenate")] == ["cat", "on", "concat"]


def test_duplicate_and_empty_queries_are_rejected():
    with pytest.raises(ValueError, match="duplicates"):
        QueryMatcher(["Dog", "dog!"])
    with pytest.raises(ValueError, match="empty after normalisation"):
        QueryMatcher(["dog", "--"])


@settings(max_examples=300, deadline=None)
@given(
    queries=st.lists(
        st.sampled_from(WORDS) | st.text("abc ", min_size=1, max_size=6), min_size=1, max_size=12
    ),
    parts=st.lists(
        st.tuples(st.sampled_from(WORDS + ["abc", "c", "AB", "Cat"]), st.sampled_from(SEPARATORS)),
        max_size=12,
    ),
    word_boundary=st.booleans(),
)
def test_matches_equal_brute_force(queries, parts, word_boundary):
    unique = list(dict.fromkeys(q for q in (normalize_text(q) for q in queries) if q))
    if not unique:
        return
    caption = "".join(word + sep for word, sep in parts)
    matcher = QueryMatcher(unique, word_boundary=word_boundary)
    assert matcher.match(caption) == brute_force_matches(unique, caption, word_boundary)


def test_real_coco_captions_equal_brute_force(shared_data):
    with gzip.open(shared_data / "coco_captions_mini" / "coco_val2017_all_captions.csv.gz", "rt") as f:
        captions = [row["caption"] for row in csv.DictReader(f)]
    queries = build_queries(captions, word_lists=[["fire hydrant", "teddy bear", "a"]], min_count=20)
    assert {"fire hydrant", "teddy bear", "dog", "pizza"} <= set(queries)
    matcher = QueryMatcher(queries)
    sample = captions[::50]  # 501 captions x ~1,700 queries
    total = 0
    for caption in sample:
        found = matcher.match(caption)
        assert found == brute_force_matches(queries, caption)
        total += len(found)
    assert total > 2 * len(sample)


def test_half_a_million_queries():
    queries = [f"q{i} w{i % 997}" for i in range(500_000)]
    t0 = time.perf_counter()
    matcher = QueryMatcher(queries)
    build_s = time.perf_counter() - t0
    assert len(matcher) == 500_000
    assert matcher.match("x q499999 w502 y q7 w7 q7") == [7, 499_999]
    assert build_s < 60
