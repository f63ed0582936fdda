"""Caps are respected (binomially) and decisions are deterministic and order-free."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipforge.curate.balance import BalanceRule, QueryCounts, keep_pair, keep_probability, unit_hash


def test_unit_hash_is_fixed_and_uniform():
    assert unit_hash(0, "a.jsonl:1") == unit_hash(0, "a.jsonl:1")
    assert unit_hash(0, "a.jsonl:1") != unit_hash(1, "a.jsonl:1")
    values = np.array([unit_hash(3, f"k{i}") for i in range(20_000)])
    assert values.min() >= 0.0 and values.max() < 1.0
    histogram = np.histogram(values, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(histogram - 2_000) < 5 * math.sqrt(2_000))


def test_keep_probability_rule():
    counts = np.array([10, 100, 1_000, 0])
    assert keep_probability([], counts, cap=50) == 0.0
    assert keep_probability([0], counts, cap=50) == 1.0  # tail query: kept whole
    assert keep_probability([1, 2], counts, cap=50) == pytest.approx(0.5)  # rarest head query decides
    assert keep_probability([0, 2], counts, cap=50) == 1.0  # any tail query keeps the pair
    assert keep_probability([2], counts, cap=50) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="cap"):
        BalanceRule(cap=0)


def _simulate(cap: int, seed: int, order: np.ndarray):
    """Three head queries (5,000 / 2,000 / 800 single-query pairs), a tail query (150 pairs), and 1,000
    pairs that show both head query 0 and head query 2."""
    pairs = [(f"p{i}", [0]) for i in range(5_000)]
    pairs += [(f"p{5_000 + i}", [1]) for i in range(2_000)]
    pairs += [(f"p{7_000 + i}", [2]) for i in range(800)]
    pairs += [(f"p{7_800 + i}", [3]) for i in range(150)]
    pairs += [(f"p{8_000 + i}", [0, 2]) for i in range(1_000)]
    counts = QueryCounts(4)
    for _, ids in pairs:
        counts.add(ids)
    counts.flush()
    rule = BalanceRule(cap=cap, seed=seed)
    kept = {pairs[i][0] for i in order if keep_pair(pairs[i][0], pairs[i][1], counts.counts, rule)}
    return pairs, counts.counts, kept


def test_caps_respected_and_tail_kept():
    cap = 300
    pairs, counts, kept = _simulate(cap, seed=0, order=np.arange(8_950))
    assert counts.tolist() == [6_000, 2_000, 1_800, 150]
    only = {q: [k for k, ids in pairs if ids == [q]] for q in range(4)}
    assert all(k in kept for k in only[3])  # tail kept whole
    for q in range(3):  # single-query pairs: Binomial(n, cap/count)
        n, p = len(only[q]), cap / counts[q]
        kept_q = sum(k in kept for k in only[q])
        assert abs(kept_q - n * p) < 5 * math.sqrt(n * p * (1 - p)), (q, kept_q, n * p)
    # head query 0 as a whole: its 6,000 pairs were sampled at >= cap/6000 each -> about cap in total
    # for its single-query pairs plus the shared ones kept at the rarer query 2's rate (cap/1800)
    shared = [k for k, ids in pairs if ids == [0, 2]]
    kept_shared = sum(k in kept for k in shared)
    expected = 1_000 * cap / 1_800
    assert abs(kept_shared - expected) < 5 * math.sqrt(expected)


def test_decisions_are_deterministic_and_order_free():
    _, _, kept_a = _simulate(300, seed=0, order=np.arange(8_950))
    _, _, kept_b = _simulate(300, seed=0, order=np.random.default_rng(1).permutation(8_950))
    _, _, kept_c = _simulate(300, seed=1, order=np.arange(8_950))
    assert kept_a == kept_b
    assert kept_a != kept_c
    assert abs(len(kept_a) - len(kept_c)) < 150


def test_counts_sum_and_roundtrip(tmp_path):
    a, b = QueryCounts(3), QueryCounts(3)
    a.add([0, 2])
    b.add([2])
    total = a + b
    assert total.counts.tolist() == [1, 0, 2]
    loaded = QueryCounts.load(total.save(tmp_path / "c.npy"), 3)
    assert loaded.counts.tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="the query list has 4"):
        QueryCounts.load(tmp_path / "c.npy", 4)
