"""`clipforge classify`: zero-shot classify images with your own labels; optionally sort them into folders."""

from __future__ import annotations

import argparse
import sys

from clipforge.commands.options import (
    add_model_args,
    apply_backend,
    load_model_from,
    positive_int,
    user_path,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge classify", description=__doc__)
    p.add_argument(
        "images", type=user_path, nargs="+", help="image files, folders (recursive) or glob patterns"
    )
    p.add_argument(
        "--labels", required=True, help="'cat,dog,bird' (two or more) or a UTF-8 file with one label per line"
    )
    p.add_argument("--templates", help="'a photo of a {}.|a drawing of a {}.' or a file, one per line")
    add_model_args(p, backend=True)
    p.add_argument("--top-k", type=positive_int, default=3)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument(
        "--output",
        type=user_path,
        help="write predictions to a .csv or .json file (skipped files: beside it, NAME.skipped.csv)",
    )
    p.add_argument("--move-into", type=user_path, help="sort files into DIR/<label>/ (copies unless --move)")
    p.add_argument("--move", action="store_true", help="with --move-into: move files instead of copying")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="do not cache the label embeddings (default: cached under ~/.cache/clipforge)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from clipforge.apps.classify import (
        OUTPUT_SUFFIXES,
        classify_files,
        prediction_rows,
        sort_into,
        write_predictions,
    )
    from clipforge.apps.inputs import collect_images, parse_labels, parse_templates
    from clipforge.apps.skips import skipped_file_for
    from clipforge.fileio import check_output_dir, check_output_file
    from clipforge.results import markdown_table

    # everything that can be refused is refused before the model is loaded
    if args.move and not args.move_into:
        raise ValueError("--move needs --move-into DIR")
    labels = parse_labels(args.labels)
    templates = parse_templates(args.templates)
    if args.output:
        check_output_file(args.output, OUTPUT_SUFFIXES, "--output")
    if args.move_into:
        check_output_dir(args.move_into, "--move-into")
    paths = collect_images(args.images)
    model, preprocess = load_model_from(args)
    model = apply_backend(args, model, preprocess)
    report = classify_files(
        model,
        preprocess,
        paths,
        labels,
        templates,
        top_k=args.top_k,
        batch_size=args.batch_size,
        cache_dir=not args.no_cache,
        progress=not args.quiet,
    )
    rows = prediction_rows(report)
    result: dict = {"predictions": rows, "failures": report.failures, "num_images": len(paths)}
    if not args.quiet and rows:
        print(markdown_table(rows))
    for failure in report.failures:
        print(f"skipped {failure['path']}: {failure['error']}", file=sys.stderr)
    skip_list = None
    if args.output:
        result["output"] = str(write_predictions(report, args.output))
        skip_list = report.skipped.write_csv(skipped_file_for(args.output))
        result["skipped_file"] = str(skip_list)
    report.skipped.raise_if_all(len(paths), "images", skip_list)
    if report.failures:
        print(f"classified {len(rows)} of {len(paths)} images; {report.skipped.summary()}", file=sys.stderr)
    if args.move_into:
        result["placed"] = sort_into(report, args.move_into, move=args.move)
    return result
