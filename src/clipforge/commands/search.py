"""`clipforge search`: query an index folder by text, by image, or both -- with the model that embedded it
(recorded in the index; another model is refused)."""

from __future__ import annotations

import argparse
import json

from clipforge.commands.options import add_model_args, has_weights, load_model_from, positive_int, user_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge search", description=__doc__)
    p.add_argument("index", type=user_path, help="folder written by `clipforge index`")
    p.add_argument("--text", help="text query")
    p.add_argument("--image", type=user_path, help="image file query")
    p.add_argument("-k", "--top-k", type=positive_int, default=10)
    add_model_args(p, optional_weights="the model recorded in the index")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def index_model(index, args):
    """The index's recorded model, or the one the flags name (which must have the same weights)."""
    from clipforge.apps.provenance import load_recorded

    if has_weights(args) or args.model:
        model, preprocess = load_model_from(args)
    else:
        model, preprocess = load_recorded(index.model_source, args.device, index.folder / "index.json")
    index.check_model(model)
    return model, preprocess


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from clipforge.apps.search import SearchIndex, search
    from clipforge.results import markdown_table

    if not args.text and not args.image:
        raise ValueError("give --text, --image or both")
    if args.text is not None and not args.text.strip():
        raise ValueError("--text: the query is empty")
    index = SearchIndex(args.index)
    model, preprocess = index_model(index, args)
    hits = [
        h.to_dict() for h in search(index, model, preprocess, text=args.text, image=args.image, k=args.top_k)
    ]
    if args.json:
        print(json.dumps(hits, indent=2))
    else:
        rows = [{"rank": h["rank"], "score": round(h["score"], 4), **h["metadata"]} for h in hits]
        print(markdown_table(rows))
    return {"hits": hits}
