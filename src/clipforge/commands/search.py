"""`clipforge search`: query an index folder by text, by image, or both."""

from __future__ import annotations

import argparse
import json

from clipforge.commands.options import add_model_args, load_model_from, user_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge search", description=__doc__)
    p.add_argument("index", type=user_path, help="folder written by `clipforge index`")
    p.add_argument("--text", help="text query")
    p.add_argument("--image", type=user_path, help="image file query")
    p.add_argument("-k", "--top-k", type=int, default=10)
    add_model_args(p)  # must be the model that embedded the index
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from clipforge.apps.search import SearchIndex, search
    from clipforge.results import markdown_table

    if not args.text and not args.image:
        raise ValueError("give --text, --image or both")
    index = SearchIndex(args.index)
    model, preprocess = load_model_from(args)
    hits = [
        h.to_dict() for h in search(index, model, preprocess, text=args.text, image=args.image, k=args.top_k)
    ]
    if args.json:
        print(json.dumps(hits, indent=2))
    else:
        rows = [{"rank": h["rank"], "score": round(h["score"], 4), **h["metadata"]} for h in hits]
        print(markdown_table(rows))
    return {"hits": hits}
