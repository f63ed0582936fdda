"""`clipforge index`: build a faiss index (+ metadata, thumbnails) from `clipforge embed` output."""

from __future__ import annotations

import argparse
import json

from clipforge.commands.options import user_path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="clipforge index", description=__doc__)
    p.add_argument("embeddings", type=user_path, help="folder written by `clipforge embed`")
    p.add_argument("--out", type=user_path, required=True, help="index folder to create")
    p.add_argument(
        "--kind",
        choices=("auto", "flat", "ivf", "hnsw", "ivfpq"),
        default="auto",
        help="auto: exact below 50k vectors, IVF below 1M, IVF-PQ above",
    )
    p.add_argument("--nprobe", type=int, help="IVF lists searched per query (default nlist/16, >= 8)")
    p.add_argument("--no-thumbnails", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    from clipforge.apps.index import build_index_dir

    report = build_index_dir(
        args.embeddings,
        args.out,
        args.kind,
        nprobe=args.nprobe,
        thumbnails=not args.no_thumbnails,
        progress=not args.quiet,
    )
    if not args.quiet:
        print(json.dumps(report, indent=2))
    return report
