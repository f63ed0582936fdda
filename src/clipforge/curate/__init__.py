"""WIT-style curation: stream raw (image, caption) pairs, keep those whose caption contains a query,
cap each query's share, clean duplicates, and write WebDataset shards. See docs/curation.md."""

from clipforge.curate.balance import BalanceRule, QueryCounts, keep_probability, unit_hash
from clipforge.curate.matcher import QueryMatcher, brute_force_matches, normalize_text
from clipforge.curate.pipeline import CurateConfig, curate
from clipforge.curate.queries import build_queries, load_queries, save_queries
from clipforge.curate.sources import Pair, assign_files, iter_pairs, list_input_files, rank_from_env

__all__ = [
    "BalanceRule",
    "CurateConfig",
    "Pair",
    "QueryCounts",
    "QueryMatcher",
    "assign_files",
    "brute_force_matches",
    "build_queries",
    "curate",
    "iter_pairs",
    "keep_probability",
    "list_input_files",
    "load_queries",
    "normalize_text",
    "rank_from_env",
    "save_queries",
    "unit_hash",
]
