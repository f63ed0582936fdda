"""Per-query caps, WIT style, decided by hashing so any process on any machine agrees.

Pass 1 counts, for every query q, how many candidate pairs match it (count[q]; memory O(#queries)
whatever the input size). A query is *tail* when count[q] <= cap and *head* otherwise. Pass 2 keeps

* every pair matching at least one tail query (tail queries are kept whole), and
* a pair matching only head queries with probability p = max over its queries of cap / count[q]:
  the pair is kept for the rarest concept it shows, so "a dog on a skateboard" is not thinned as hard
  as "a dog" when "skateboard" is less common.

A head query that is the rarest of every pair it appears in ends with about `cap` pairs (binomial,
std sqrt(cap)); a head query can end above `cap` through pairs kept for another (rarer) query, which
the stats report as `after`. The coin is `unit_hash(seed, key) < p`: the same pair gets the same
decision whatever the order, the number of workers or the rank that sees it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipforge.figures import pyplot, save_figure


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, key)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little") / 2.0**64


@dataclass(frozen=True)
class BalanceRule:
    cap: int = 20_000
    seed: int = 0

    def __post_init__(self):
        if self.cap < 1:
            raise ValueError(f"BalanceRule.cap must be >= 1, got {self.cap}")


def keep_probability(query_ids: Sequence[int], counts: Sequence[int], cap: int) -> float:
    """1 if any matched query is tail (count <= cap), else max over matched queries of cap / count.
    `counts` may be an array; a list (`array.tolist()`) is twice as fast to index."""
    if len(query_ids) == 0:
        return 0.0
    smallest = int(min(map(counts.__getitem__, query_ids)))
    return 1.0 if smallest <= cap else cap / smallest


def keep_pair(key: str, query_ids: Sequence[int], counts: Sequence[int], rule: BalanceRule) -> bool:
    probability = keep_probability(query_ids, counts, rule.cap)
    return probability >= 1.0 or (probability > 0.0 and unit_hash(rule.seed, key) < probability)


class QueryCounts:
    """Matches per query, as an int64 vector; summed across workers and ranks with `+`."""

    def __init__(self, num_queries: int, counts: np.ndarray | None = None):
        self.counts = np.zeros(num_queries, np.int64) if counts is None else counts.astype(np.int64)
        if self.counts.shape != (num_queries,):
            raise ValueError(f"counts shape {self.counts.shape} != ({num_queries},)")
        self._pending: list[int] = []

    def add(self, query_ids: Sequence[int]) -> None:
        self._pending.extend(query_ids)
        if len(self._pending) >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.counts += np.bincount(np.asarray(self._pending, np.int64), minlength=len(self.counts))
            self._pending = []

    def __add__(self, other: QueryCounts) -> QueryCounts:
        self.flush()
        other.flush()
        return QueryCounts(len(self.counts), self.counts + other.counts)

    def save(self, path: str | os.PathLike) -> Path:
        self.flush()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, self.counts)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, num_queries: int) -> QueryCounts:
        counts = np.load(path)
        if counts.shape != (num_queries,):
            raise ValueError(
                f"{path}: counts for {counts.shape[0]} queries, the query list has {num_queries}"
            )
        return cls(num_queries, counts)


def head_tail_summary(before: np.ndarray, after: np.ndarray, cap: int) -> dict:
    head = before > cap
    return {
        "cap": cap,
        "queries": len(before),
        "queries_matched": int((before > 0).sum()),
        "head_queries": int(head.sum()),
        "tail_queries": int(((before > 0) & ~head).sum()),
        "head_matches_before": int(before[head].sum()),
        "head_matches_after": int(after[head].sum()),
        "tail_matches_before": int(before[~head].sum()),
        "tail_matches_after": int(after[~head].sum()),
        "max_count_before": int(before.max(initial=0)),
        "max_count_after": int(after.max(initial=0)),
    }


def plot_query_counts(before: np.ndarray, after: np.ndarray, cap: int, path: str | os.PathLike) -> Path:
    """Counts per query sorted by the count before, log-log, before vs after, with the cap line."""
    plt = pyplot()

    order = np.argsort(-before, kind="stable")
    order = order[before[order] > 0]
    ranks = np.arange(1, len(order) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(ranks, before[order], label="before (matches)", lw=1.5)
    ax.plot(ranks, np.maximum(after[order], 0.8), ".", ms=2, alpha=0.6, label="after (kept pairs)")
    ax.axhline(cap, color="k", ls="--", lw=1, label=f"cap = {cap:,}")
    head = int((before[order] > cap).sum())
    if head:
        ax.axvspan(0.8, head + 0.5, color="tab:red", alpha=0.08, label=f"head ({head:,} queries)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.8, len(order) + 1)  # explicit: autoscaling a log axis over one point (one query) fails
    ax.set_xlabel("query rank (by count before)")
    ax.set_ylabel("pairs matching the query")
    ax.set_title("Pairs per query before and after balancing")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    return save_figure(fig, path, dpi=110)
