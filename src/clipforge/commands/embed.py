"""`clipforge embed`: images or texts -> sharded .npy embeddings + metadata (resumable, torchrun-aware)."""

from __future__ import annotations

import argparse

from clipforge.commands.options import (
    add_model_args,
    apply_backend,
    load_model_from,
    model_source,
    positive_int,
    user_path,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge embed", description=__doc__)
    p.add_argument(
        "source",
        type=user_path,
        help="image folder, .csv/.tsv/.jsonl/.txt table, or WebDataset .tar[.gz] shards/folder",
    )
    p.add_argument(
        "--out", type=user_path, required=True, help="output folder (a rerun of the same job resumes it)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="the --out folder holds another job: delete it, start clean"
    )
    p.add_argument("--kind", choices=("image", "text"), default="image")
    p.add_argument("--column", help="table column with the image path (default 'path') or text ('text')")
    add_model_args(p, backend=True)
    p.add_argument("--shard-size", type=positive_int, default=1_000, help="rows per output shard")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--metadata", choices=("parquet", "jsonl"), default="parquet")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from clipforge.apps.embed import embed_source
    from clipforge.apps.sources import plan_source
    from clipforge.fileio import check_output_dir

    check_output_dir(args.out, "--out")
    plan_source(args.source, args.kind, args.column, args.shard_size)  # a bad source is refused first
    model, preprocess = load_model_from(args)
    model = apply_backend(args, model, preprocess, images=args.kind == "image", texts=args.kind == "text")
    report = embed_source(
        model,
        preprocess,
        args.source,
        args.out,
        kind=args.kind,
        column=args.column,
        shard_size=args.shard_size,
        dtype=args.dtype,
        metadata_format=args.metadata,
        batch_size=args.batch_size,
        model_name=model_source(args),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if not args.quiet:
        failures = report["failures"]
        note = f", list in {report['skipped_file']}" if failures else ""
        print(
            f"rank {report['rank']}/{report['world_size']}: wrote {len(report['written'])} shards "
            f"({report['rows']} rows), {len(report['skipped'])} already finished, "
            f"{len(failures)} inputs skipped{note} -> {args.out}"
        )
    return report
