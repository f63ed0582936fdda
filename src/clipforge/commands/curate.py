"""`clipforge curate`: WIT-style query-balanced WebDataset shards from raw (image, caption) pairs."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from clipforge.commands.options import user_path
from clipforge.curate.clean import CleanConfig, ClipSimilarity
from clipforge.curate.pipeline import STAGES, CurateConfig, curate
from clipforge.curate.queries import build_queries, save_queries
from clipforge.curate.sources import iter_pairs, list_input_files

SHARED_DATA = Path(
    os.environ.get("CLIPFORGE_SHARED_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data")
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge curate", description=__doc__)
    p.add_argument(
        "--input",
        type=user_path,
        nargs="+",
        default=[],
        help="files, folders or globs (JSONL/CSV/TSV/Parquet/tar)",
    )
    p.add_argument("--out", type=user_path, help="output folder for shards, manifest, stats")
    p.add_argument("--queries", type=user_path, help="query file, one per line")
    p.add_argument(
        "--build-queries", action="store_true", help="build queries from the inputs' captions (+ --word-list)"
    )
    p.add_argument(
        "--word-list",
        type=user_path,
        nargs="*",
        default=[],
        help="files of extra queries for --build-queries",
    )
    p.add_argument(
        "--min-count", type=int, default=100, help="--build-queries: min corpus count of a word/n-gram"
    )
    p.add_argument("--max-ngram", type=int, default=2)
    p.add_argument("--max-queries", type=int, default=500_000)
    p.add_argument("--cap", type=int, default=20_000, help="pairs per query (head queries are sampled)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--substring", action="store_true", help="match plain substrings (scripts without spaces)")
    p.add_argument("--image-field")
    p.add_argument("--caption-field")
    p.add_argument("--shard-size", type=int, default=10_000, help="samples per output shard")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--stage", choices=STAGES, default="all")
    p.add_argument(
        "--counts-dir", type=user_path, help="shared folder for per-rank pass-1 counts (multi-machine)"
    )
    p.add_argument("--timeout-s", type=float, default=10.0, help="per-URL fetch timeout")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--min-caption-chars", type=int, default=5)
    p.add_argument("--min-caption-words", type=int, default=2)
    p.add_argument("--min-image-side", type=int, default=32)
    p.add_argument("--near-dup-threshold", type=float, default=0.95, help="cosine; <= 0 turns it off")
    p.add_argument("--no-dedup-images", action="store_true")
    p.add_argument("--no-dedup-captions", action="store_true")
    p.add_argument("--min-similarity", type=float, help="drop pairs whose image-text cosine is below this")
    p.add_argument("--model", default="ViT-B-32", help="clipforge model for --min-similarity")
    p.add_argument("--pretrained", help="checkpoint for --model")
    p.add_argument("--smoke", action="store_true", help="run on coco_captions_mini into a temp folder")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    if args.smoke:
        coco = SHARED_DATA / "coco_captions_mini"
        args.input = args.input or [str(coco / "captions.csv")]
        args.out = args.out or tempfile.mkdtemp(prefix="clipforge-curate-")
        args.build_queries, args.min_count, args.cap, args.shard_size = True, 5, 40, 100
    if not args.input or not args.out:
        raise ValueError("--input and --out are required (or --smoke)")
    queries_file = args.queries
    if queries_file is None:
        if not args.build_queries:
            raise ValueError("give --queries FILE or --build-queries")
        queries_file = _build(args)
    clean = CleanConfig(
        min_caption_chars=args.min_caption_chars,
        min_caption_words=args.min_caption_words,
        min_image_side=args.min_image_side,
        dedup_images=not args.no_dedup_images,
        dedup_captions=not args.no_dedup_captions,
        near_dup_threshold=args.near_dup_threshold if args.near_dup_threshold > 0 else None,
        min_similarity=args.min_similarity,
    )
    config = CurateConfig(
        inputs=tuple(args.input),
        output_dir=args.out,
        queries_file=queries_file,
        cap=args.cap,
        seed=args.seed,
        word_boundary=not args.substring,
        image_field=args.image_field,
        caption_field=args.caption_field,
        samples_per_shard=args.shard_size,
        num_workers=args.workers,
        stage=args.stage,
        counts_dir=args.counts_dir,
        fetch_timeout_s=args.timeout_s,
        fetch_retries=args.retries,
        clean=clean,
    )
    scorer = None
    if args.min_similarity is not None:
        from clipforge.factory import load_model

        model, preprocess = load_model(args.model, args.pretrained)
        scorer = ClipSimilarity(model, preprocess)
    stats = curate(config, scorer=scorer)
    print(
        json.dumps(
            {k: stats[k] for k in ("input_pairs", "kept", "dropped", "accounted") if k in stats}, indent=2
        )
    )
    print(f"output: {args.out}")
    return stats


def _build(args) -> str:
    def captions():
        for path in list_input_files(args.input):
            for pair in iter_pairs(path, args.image_field, args.caption_field):
                if pair.caption:
                    yield pair.caption

    word_lists = [Path(p).read_text(encoding="utf-8").splitlines() for p in args.word_list]
    queries = build_queries(
        captions(),
        word_lists,
        min_count=args.min_count,
        max_ngram=args.max_ngram,
        max_queries=args.max_queries,
    )
    if not queries:
        raise ValueError(f"--build-queries found no word seen >= {args.min_count} times; lower --min-count")
    path = save_queries(Path(args.out) / "queries.txt", queries)
    print(f"built {len(queries):,} queries -> {path}")
    return str(path)
