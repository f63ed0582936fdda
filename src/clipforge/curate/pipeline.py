"""The curation run: pass 1 counts matches per query, pass 2 selects, cleans and writes shards.

Within one machine, input files are spread over `num_workers` forked processes (reading, matching,
balancing, fetching and decoding run there); each worker spools the candidates of a file to disk and
the main process consumes the spools in input order, so de-duplication (first kept wins) and the
output are the same for any number of workers. Across machines, each rank takes its share of the
files (`assign_files`), writes its pass-1 counts to `counts_dir`, waits until every rank's counts are
there (a shared folder is the only coordination), and balances with the global sum. Duplicates are
removed within a rank.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clipforge.curate.balance import (
    BalanceRule,
    QueryCounts,
    head_tail_summary,
    keep_pair,
    plot_query_counts,
)
from clipforge.curate.clean import CleanConfig, Deduplicator, Scorer, caption_problem, check_image, digest64
from clipforge.curate.fetch import AutoFetcher, Fetcher, FetchError, HttpFetcher
from clipforge.curate.matcher import QueryMatcher, normalize_text
from clipforge.curate.queries import load_queries
from clipforge.curate.sources import Pair, assign_files, iter_pairs, list_input_files, rank_from_env
from clipforge.curate.writer import ShardWriter
from clipforge.fileio import atomic_write_text
from clipforge.results import markdown_table, write_results

STAGES = ("all", "count", "select")


@dataclass(frozen=True)
class CurateConfig:
    inputs: tuple[str, ...]
    output_dir: str
    queries_file: str
    cap: int = 20_000
    seed: int = 0
    word_boundary: bool = True
    image_field: str | None = None
    caption_field: str | None = None
    samples_per_shard: int = 10_000
    prefix: str = "curated"
    num_workers: int = 1
    rank: int | None = None  # None: from RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS
    world_size: int | None = None
    stage: str = "all"
    counts_dir: str | None = None  # default <output_dir>/counts; must be shared between ranks
    barrier_timeout_s: float = 24 * 3600.0
    fetch_timeout_s: float = 10.0
    fetch_retries: int = 2
    clean: CleanConfig = field(default_factory=CleanConfig)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"CurateConfig.stage must be one of {STAGES}, got {self.stage!r}")
        if self.num_workers < 1:
            raise ValueError(f"CurateConfig.num_workers must be >= 1, got {self.num_workers}")


# Set in the parent before forking; workers read it (nothing large is pickled per task).
_WORKER: dict = {}


def _count_file(path: Path) -> tuple[np.ndarray, int]:
    config, matcher = _WORKER["config"], _WORKER["matcher"]
    counts, pairs = QueryCounts(len(matcher)), 0
    for pair in iter_pairs(path, config.image_field, config.caption_field):
        pairs += 1
        normalised = normalize_text(pair.caption) if pair.caption else ""
        if caption_problem(pair.caption, config.clean, normalised) is None:
            counts.add(matcher.match_normalized(normalised))
    counts.flush()
    return counts.counts, pairs


def _select_pair(pair: Pair) -> tuple[str | None, dict | None]:
    """The per-pair work of pass 2 up to de-duplication: (drop reason, None) or (None, candidate)."""
    config, matcher = _WORKER["config"], _WORKER["matcher"]
    normalised = normalize_text(pair.caption) if pair.caption else ""
    reason = caption_problem(pair.caption, config.clean, normalised)
    if reason:
        return reason, None
    query_ids = matcher.match_normalized(normalised)
    if not query_ids:
        return "no_query_match", None
    if not keep_pair(pair.key, query_ids, _WORKER["counts"], _WORKER["rule"]):
        return "balanced_out", None
    data = pair.image_bytes
    if data is None:
        try:
            data = _WORKER["fetcher"].fetch(pair.image)
        except FetchError as err:
            return f"fetch_{err.reason}", None
    reason, image = check_image(data, config.clean)
    if reason:
        return reason, None
    return None, {
        "key": pair.key,
        "image": pair.image,
        "caption": pair.caption.strip(),
        "query_ids": query_ids,
        "jpeg": image.jpeg,
        "width": image.width,
        "height": image.height,
        "thumbnail": image.thumbnail,
        "image_hash": digest64(data),
        "caption_hash": digest64(normalised.encode("utf-8")),
    }


def _select_file(job: tuple[int, Path]) -> tuple[str, dict[str, int], int]:
    index, path = job
    config = _WORKER["config"]
    spool = Path(_WORKER["spool_dir"]) / f"{index:06d}.pkl"
    drops: Counter = Counter()
    pairs = 0
    with open(spool, "wb") as f:
        for pair in iter_pairs(path, config.image_field, config.caption_field):
            pairs += 1
            reason, candidate = _select_pair(pair)
            if reason:
                drops[reason] += 1
            else:
                pickle.dump(candidate, f, protocol=pickle.HIGHEST_PROTOCOL)
    return str(spool), dict(drops), pairs


def _read_spool(path: str) -> Iterator[dict]:
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def _map_in_order(function, jobs: list, num_workers: int) -> Iterator:
    if num_workers == 1 or len(jobs) <= 1:
        yield from map(function, jobs)
        return
    with multiprocessing.get_context("fork").Pool(min(num_workers, len(jobs))) as pool:
        yield from pool.imap(function, jobs)


def _counts_path(counts_dir: Path, rank: int, world_size: int) -> Path:
    return counts_dir / f"counts-{rank:05d}-of-{world_size:05d}.npy"


def _global_counts(counts_dir: Path, world_size: int, num_queries: int, timeout_s: float) -> np.ndarray:
    """Sum every rank's pass-1 counts, waiting for ranks that are still counting."""
    paths = [_counts_path(counts_dir, r, world_size) for r in range(world_size)]
    deadline = time.monotonic() + timeout_s
    while missing := [p for p in paths if not p.exists()]:
        if time.monotonic() > deadline:
            raise FileNotFoundError(
                f"pass-1 counts missing after {timeout_s:.0f}s: {[str(p) for p in missing]}; "
                "run the count stage on every rank with the same --counts-dir"
            )
        time.sleep(2.0)
    return sum(QueryCounts.load(p, num_queries).counts for p in paths)


def curate(config: CurateConfig, fetcher: Fetcher | None = None, scorer: Scorer | None = None) -> dict:
    """Run the stages named by `config.stage`; returns the stats dict (also written as stats.json)."""
    started = time.perf_counter()
    rank, world_size = (config.rank, config.world_size or 1) if config.rank is not None else rank_from_env()
    files = assign_files(list_input_files(config.inputs), rank, world_size)
    output_dir = Path(config.output_dir)
    counts_dir = Path(config.counts_dir) if config.counts_dir else output_dir / "counts"
    queries = load_queries(config.queries_file)
    matcher = QueryMatcher(queries, word_boundary=config.word_boundary)
    if config.clean.min_similarity is not None and scorer is None:
        raise ValueError("clean.min_similarity is set but no scorer (a clipforge model) was given")
    _WORKER.clear()
    _WORKER.update(config=config, matcher=matcher)
    timings: dict[str, float] = {}
    if config.stage in ("all", "count"):
        t0 = time.perf_counter()
        input_pairs = _count_stage(
            config, files, len(queries), _counts_path(counts_dir, rank, world_size), rank
        )
        timings["count_s"] = time.perf_counter() - t0
        if config.stage == "count":
            return {
                "stage": "count",
                "rank": rank,
                "input_pairs": input_pairs,
                "files": len(files),
                "counts": str(_counts_path(counts_dir, rank, world_size)),
                "timings": timings,
            }
    before = _global_counts(counts_dir, world_size, len(queries), config.barrier_timeout_s)
    t0 = time.perf_counter()
    suffix = f"-r{rank:05d}" if world_size > 1 else ""
    writer = ShardWriter(output_dir, f"{config.prefix}{suffix}", config.samples_per_shard)
    after, drops = QueryCounts(len(queries)), Counter()
    input_pairs = _select_stage(config, files, before, fetcher, scorer, matcher, writer, after, drops, rank)
    timings["select_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    manifest = writer.finish(f"manifest{suffix}.json", {"rank": rank, "world_size": world_size})
    stats = _stats(config, rank, world_size, len(files), input_pairs, writer.total, drops, before, after.counts,
                   timings, manifest)  # fmt: skip
    _write_reports(output_dir, suffix, stats, queries, before, after.counts, config.cap)
    return stats


def _count_stage(config: CurateConfig, files: list, num_queries: int, counts_path: Path, rank: int) -> int:
    """Stage 1: per-query caption counts of this rank's files, saved for every rank to sum; returns pairs read."""
    local = np.zeros(num_queries, np.int64)
    input_pairs = 0
    progress = tqdm(_map_in_order(_count_file, files, config.num_workers), total=len(files),
                    desc=f"count r{rank}", unit="file")  # fmt: skip
    for counts, pairs in progress:
        local += counts
        input_pairs += pairs
    QueryCounts(num_queries, local).save(counts_path)
    return input_pairs


def _select_stage(
    config, files, before, fetcher, scorer, matcher, writer, after, drops: Counter, rank: int
) -> int:
    """Stage 2: balance, fetch and clean each file's pairs (workers spool them), then dedup, score and write
    them in file order; `after` and `drops` are filled in. Returns the pairs read."""
    http = HttpFetcher(timeout_s=config.fetch_timeout_s, retries=config.fetch_retries)
    spool_dir = Path(config.output_dir) / f".spool-r{rank:05d}"
    spool_dir.mkdir(parents=True, exist_ok=True)
    _WORKER.update(
        counts=before.tolist(),
        rule=BalanceRule(config.cap, config.seed),
        spool_dir=str(spool_dir),
        fetcher=fetcher or AutoFetcher(http=http),
    )
    dedup = Deduplicator(config.clean)
    input_pairs = 0
    jobs = list(enumerate(files))
    progress = tqdm(_map_in_order(_select_file, jobs, config.num_workers), total=len(jobs),
                    desc=f"select r{rank}", unit="file")  # fmt: skip
    for spool, file_drops, pairs in progress:
        input_pairs += pairs
        drops.update(file_drops)
        _consume_spool(spool, matcher, dedup, writer, after, drops, scorer, config.clean, rank)
        os.remove(spool)
    spool_dir.rmdir()
    after.flush()
    return input_pairs


def _consume_spool(
    spool, matcher, dedup, writer, after, drops, scorer, clean: CleanConfig, rank: int, batch_size: int = 128
) -> None:
    batch: list[dict] = []
    for candidate in _read_spool(spool):
        batch.append(candidate)
        if len(batch) == batch_size:
            _consume_batch(batch, matcher, dedup, writer, after, drops, scorer, clean, rank)
            batch = []
    if batch:
        _consume_batch(batch, matcher, dedup, writer, after, drops, scorer, clean, rank)


def _consume_batch(
    batch, matcher, dedup, writer, after, drops, scorer, clean: CleanConfig, rank: int
) -> None:
    scores = None
    if clean.min_similarity is not None:
        scores = np.asarray(scorer([c["jpeg"] for c in batch], [c["caption"] for c in batch]), np.float64)
    for i, c in enumerate(batch):
        reason = dedup.reason(c["image_hash"], c["caption_hash"], c["thumbnail"])
        if reason is None and scores is not None and scores[i] < clean.min_similarity:
            reason = "low_similarity"
        if reason:
            drops[reason] += 1
            continue
        dedup.keep(c["image_hash"], c["caption_hash"], c["thumbnail"])
        after.add(c["query_ids"])
        meta = {
            "caption": c["caption"],
            "source_key": c["key"],
            "image": c["image"],
            "width": c["width"],
            "height": c["height"],
            "queries": [matcher.queries[q] for q in c["query_ids"]],
        }
        if scores is not None:
            meta["similarity"] = round(float(scores[i]), 5)
        writer.write(f"r{rank:05d}_{writer.total:010d}", c["jpeg"], c["caption"], meta)


def _stats(
    config, rank, world_size, files, input_pairs, kept, drops, before, after, timings, manifest
) -> dict:
    dropped = dict(sorted(drops.items(), key=lambda item: -item[1]))
    return {
        "rank": rank,
        "world_size": world_size,
        "files": files,
        "input_pairs": input_pairs,
        "kept": kept,
        "dropped": dropped,
        "dropped_total": sum(dropped.values()),
        "accounted": input_pairs == kept + sum(dropped.values()),
        "balance": head_tail_summary(before, after, config.cap),
        "timings": timings,
        "pairs_per_s": input_pairs / max(timings.get("select_s", 0.0), 1e-9),
        "manifest": str(manifest),
        "config": asdict(config),
    }


def _write_reports(out_dir: Path, suffix: str, stats: dict, queries, before, after, cap: int) -> None:
    order = np.argsort(-before, kind="stable")
    order = order[before[order] > 0]
    lines = ["query\tbefore\tafter\n"] + [f"{queries[q]}\t{before[q]}\t{after[q]}\n" for q in order]
    atomic_write_text(out_dir / f"query_counts{suffix}.tsv", "".join(lines))
    plot_query_counts(before, after, cap, out_dir / f"query_counts{suffix}.png")
    drop_rows = [{"reason": r, "pairs": n} for r, n in stats["dropped"].items()]
    top = [{"query": queries[q], "before": int(before[q]), "after": int(after[q])} for q in order[:15]]
    summary = (
        f"# Curation stats (rank {stats['rank']} of {stats['world_size']})\n\n"
        f"input pairs {stats['input_pairs']:,} = kept {stats['kept']:,} + dropped {stats['dropped_total']:,}"
        f" ({'accounted' if stats['accounted'] else 'NOT accounted'})\n\n## Drops\n\n"
        + markdown_table(drop_rows)
        + "\n## Balance\n\n"
        + markdown_table([stats["balance"]])
        + "\n## Most frequent queries\n\n"
        + markdown_table(top)
        + f"\nPlot: query_counts{suffix}.png; all counts: query_counts{suffix}.tsv\n"
    )
    write_results(out_dir, f"stats{suffix}", stats, summary)
