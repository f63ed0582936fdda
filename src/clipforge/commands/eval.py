"""`clipforge eval zeroshot|retrieval|linear-probe|fewshot|shift`: the paper's evaluations, with reports.

Every subcommand writes <out>/<name>.json (CLIP_benchmark key names where they overlap), <name>.md and, for
curves and shift, <name>.png. `--smoke` runs end to end in seconds on a random tiny model and a few images.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

SMOKE_DATA = Path(
    os.environ.get("CLIPFORGE_SHARED_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data")
)


def load_model(spec: str, pretrained: str | None, device: str):
    """(model, eval transform) from a checkpoint path or a preset name (+ optional pretrained tag/path)."""
    from clipforge.factory import create_model, load
    from clipforge.transforms import image_transform

    if Path(spec).exists():
        return load(spec, device=device)
    model = create_model(spec, pretrained, device="cpu" if device == "auto" else device)
    return model, image_transform(model.config.preprocess)


def _subsample(dataset, limit: int | None, seed: int = 0):
    if limit and len(dataset.samples) > limit:
        dataset.samples = random.Random(seed).sample(dataset.samples, limit)
    return dataset


def _dataset(args, split: str, transform):
    from clipforge.evaluate.datasets import build_eval_dataset

    explicit = getattr(args, split, None)
    root = explicit or args.data_root
    if root is None:
        raise SystemExit(f"--data-root (or --{split}) is required for dataset {args.dataset!r}")
    name = args.dataset if not explicit or args.dataset not in ("cifar10", "cifar100") else "imagefolder"
    return _subsample(build_eval_dataset(name, root, split, transform), args.limit)


def _templates_and_classes(args, dataset):
    from clipforge.zeroshot.templates import SIMPLE_TEMPLATES, get_templates

    try:
        templates = get_templates(args.templates or args.dataset)
    except KeyError:
        templates = SIMPLE_TEMPLATES
    return templates, list(dataset.classes)


def cmd_zeroshot(args) -> dict:
    from clipforge.evaluate.report import write_report
    from clipforge.evaluate.zeroshot import evaluate_zeroshot

    model, transform = load_model(args.model, args.pretrained, args.device)
    dataset = _dataset(args, args.split, transform)
    templates, classnames = _templates_and_classes(args, dataset)
    metrics = evaluate_zeroshot(model, dataset, classnames, templates, batch_size=args.batch_size)
    result = {
        "task": "zeroshot_classification",
        "dataset": args.dataset,
        "model": args.model,
        "metrics": metrics,
    }
    name = f"zeroshot_{args.dataset}"
    rows = [{"dataset": args.dataset, **{k: metrics[k] for k in ("acc1", "acc5", "mean_per_class_recall")}}]
    result["files"] = write_report(args.out, name, result, rows, f"Zero-shot: {args.model}")
    return result


def cmd_retrieval(args) -> dict:
    from clipforge.evaluate.report import write_report
    from clipforge.evaluate.retrieval import evaluate_retrieval, load_captions

    model, transform = load_model(args.model, args.pretrained, args.device)
    captions = load_captions(args.captions, args.image_root, args.split)
    if args.limit:
        keep = set(range(min(args.limit, len(captions.image_paths))))
        mask = [int(i) in keep for i in captions.caption_image]
        captions.image_paths = captions.image_paths[: len(keep)]
        captions.captions = [c for c, m in zip(captions.captions, mask) if m]
        captions.caption_image = captions.caption_image[mask]
    metrics = evaluate_retrieval(model, captions, transform, batch_size=args.batch_size)
    result = {
        "task": "zeroshot_retrieval",
        "captions": str(args.captions),
        "model": args.model,
        "metrics": metrics,
    }
    rows = [
        {"direction": d, **{f"R@{k}": metrics[f"{d}_retrieval_recall@{k}"] for k in (1, 5, 10)}}
        for d in ("image", "text")
    ]
    result["files"] = write_report(args.out, "retrieval", result, rows, f"Retrieval: {args.model}")
    return result


def cmd_linear_probe(args) -> dict:
    from clipforge.evaluate.features import extract_features
    from clipforge.evaluate.linear_probe import ProbeConfig, linear_probe
    from clipforge.evaluate.report import write_report

    model, transform = load_model(args.model, args.pretrained, args.device)
    train, test = _dataset(args, "train", transform), _dataset(args, "test", transform)
    cache = False if args.no_cache else None
    kwargs = dict(batch_size=args.batch_size, cache_dir=cache)
    train_xy = extract_features(model, train, args.features, **kwargs)
    test_xy = extract_features(model, test, args.features, **kwargs)
    config = ProbeConfig(max_iter=args.max_iter, val_fraction=args.val_fraction)
    out = linear_probe(*train_xy, *test_xy, config)
    metrics = {k: out[k] for k in ("acc1", "acc5", "mean_per_class_recall", "lambda")}
    result = {"task": "linear_probe", "dataset": args.dataset, "model": args.model, "features": args.features,
              "metrics": metrics, "val_scores": {f"{k:.3e}": v for k, v in out["val_scores"].items()}}  # fmt: skip
    rows = [{"dataset": args.dataset, **metrics}]
    result["files"] = write_report(
        args.out, f"linear_probe_{args.dataset}", result, rows, f"Linear probe: {args.model}"
    )
    return result


def run_fewshot(model, train, test, templates, classnames, shots, seeds, methods, batch_size=256) -> dict:
    """Few-shot curve on unit image embeddings with the prompt-ensembled zero-shot classifier."""
    from clipforge.evaluate.features import extract_features
    from clipforge.evaluate.fewshot import FewShotConfig, fewshot_curve
    from clipforge.zeroshot.classifier import build_classifier

    train_xy = extract_features(model, train, "embedding", batch_size=batch_size)
    test_xy = extract_features(model, test, "embedding", batch_size=batch_size)
    weights = build_classifier(model, classnames, templates, batch_size=batch_size).cpu()
    config = FewShotConfig(shots=tuple(shots), seeds=tuple(seeds), methods=tuple(methods))
    return fewshot_curve(train_xy, test_xy, weights, float(model.logit_scale.detach().exp()), config)


def fewshot_rows(result: dict) -> list[dict]:
    rows = [{"method": "zeroshot", "shots": 0, "acc1_mean": result["zeroshot"]["acc1"], "acc1_std": 0.0}]
    rows += [{k: r[k] for k in ("method", "shots", "acc1_mean", "acc1_std")} for r in result["rows"]]
    return rows


def cmd_fewshot(args) -> dict:
    from clipforge.evaluate.fewshot import plot_fewshot
    from clipforge.evaluate.report import write_report

    model, transform = load_model(args.model, args.pretrained, args.device)
    train, test = _dataset(args, "train", transform), _dataset(args, "test", transform)
    templates, classnames = _templates_and_classes(args, test)
    curve = run_fewshot(model, train, test, templates, classnames, args.shots, args.seeds, args.methods,
                        args.batch_size)  # fmt: skip
    result = {"task": "fewshot", "dataset": args.dataset, "model": args.model, **curve}
    name = f"fewshot_{args.dataset}"
    result["files"] = write_report(args.out, name, result, fewshot_rows(curve), f"Few-shot: {args.model}")
    plot_fewshot(curve, Path(args.out) / f"{name}.png", title=f"{args.dataset}: {args.model}")
    result["files"]["png"] = str(Path(args.out) / f"{name}.png")
    return result


def cmd_shift(args) -> dict:
    from clipforge.evaluate.datasets import build_eval_dataset
    from clipforge.evaluate.report import plot_bars, write_report
    from clipforge.evaluate.shift import evaluate_shift, shift_table

    by_model = {}
    for spec in args.model:
        model, transform = load_model(spec, args.pretrained, args.device)
        datasets = {}
        for item in args.data:
            name, _, root = item.partition("=")
            if not root:
                raise SystemExit(f"--data {item!r}: expected NAME=ROOT, e.g. imagenet-r=/data/imagenet-r")
            datasets[name] = _subsample(build_eval_dataset(name, root, "test", transform), args.limit)
        by_model[Path(spec).stem if Path(spec).exists() else spec] = evaluate_shift(
            model, datasets, batch_size=args.batch_size
        )
    baseline = None
    if args.baseline_id and args.baseline_ood:
        baseline = (args.baseline_id, args.baseline_ood)
    rows = shift_table(by_model, reference=args.reference, baseline=baseline)
    result = {"task": "distribution_shift", "results": by_model, "table": rows}
    result["files"] = write_report(args.out, "shift", result, rows, "Distribution shift (top-1 %)")
    plot_bars(rows, list(by_model), Path(args.out) / "shift.png", "Distribution shift", "top-1 (%)")
    result["files"]["png"] = str(Path(args.out) / "shift.png")
    return result


def _common(parser: argparse.ArgumentParser, many_models: bool = False) -> None:
    if many_models:
        parser.add_argument(
            "--model", action="append", help="preset or checkpoint; repeat for model A, B, ..."
        )
    else:
        parser.add_argument("--model", default="tiny-vit", help="preset name or checkpoint path")
    parser.add_argument("--pretrained", default=None, help="pretrained tag or weights path for a preset")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="use at most this many samples per split")
    parser.add_argument("--out", default="results/eval", help="report folder")
    parser.add_argument("--smoke", action="store_true", help="random tiny model, few shared images, seconds")


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="cifar10", help="cifar10|cifar100|imagefolder|csv|imagenet...")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--train", default=None, help="train split folder/CSV (imagefolder, csv)")
    parser.add_argument("--test", default=None, help="test split folder/CSV (imagefolder, csv)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--templates", default=None, help="template set name (default: the dataset's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipforge eval", description=__doc__)
    sub = parser.add_subparsers(dest="task", required=True)
    p = sub.add_parser("zeroshot", help="zero-shot top-1/top-5/mean per-class recall")
    _common(p), _dataset_args(p)
    p = sub.add_parser("retrieval", help="Recall@1/5/10 both directions")
    _common(p)
    p.add_argument("--captions", default=None, help="CSV path,caption[,split] or JSONL")
    p.add_argument("--image-root", default=None)
    p.add_argument("--split", default=None)
    p = sub.add_parser("linear-probe", help="the paper's L-BFGS logistic-regression probe")
    _common(p), _dataset_args(p)
    p.add_argument("--features", default="auto", choices=["auto", "pre-projection", "embedding"])
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--no-cache", action="store_true", help="do not cache features on disk")
    p = sub.add_parser("fewshot", help="k-shot curves vs zero-shot")
    _common(p), _dataset_args(p)
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["linear_probe", "anchored", "cache"])
    p = sub.add_parser("shift", help="one or more models over several datasets + effective robustness")
    _common(p, many_models=True)
    p.add_argument("--data", action="append", default=[], help="NAME=ROOT, e.g. imagenet-r=/data (repeat)")
    p.add_argument("--reference", default=None, help="in-distribution dataset name (default: the first)")
    p.add_argument(
        "--baseline-id", type=float, nargs="+", default=None, help="baseline models' id accuracies"
    )
    p.add_argument("--baseline-ood", type=float, nargs="+", default=None, help="their ood accuracies")
    return parser


def apply_smoke(args) -> None:
    args.limit = args.limit or 60
    args.batch_size = min(args.batch_size, 32)
    if args.task == "retrieval":
        args.model, args.captions = (
            "tiny-vit",
            args.captions or str(SMOKE_DATA / "coco_captions_mini" / "captions.csv"),
        )
        args.limit = 20
    elif args.task == "shift":
        args.model = args.model or ["tiny-vit"]
        args.data = args.data or [f"cifar10={SMOKE_DATA / 'cifar10'}"]
    else:
        args.model, args.dataset = "tiny-vit", "cifar10"
        args.data_root = args.data_root or str(SMOKE_DATA / "cifar10")
        if args.task == "fewshot":
            args.limit, args.shots, args.seeds = 200, [1, 2], [0, 1]


COMMANDS = {
    "zeroshot": cmd_zeroshot,
    "retrieval": cmd_retrieval,
    "linear-probe": cmd_linear_probe,
    "fewshot": cmd_fewshot,
    "shift": cmd_shift,
}


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.smoke:
        apply_smoke(args)
    if args.task == "retrieval" and not args.captions:
        raise SystemExit("--captions is required (CSV path,caption or JSONL)")
    if args.task == "shift" and not (args.model and args.data):
        raise SystemExit("shift needs --model (repeatable) and --data NAME=ROOT (repeatable)")
    result = COMMANDS[args.task](args)
    print(f"wrote {', '.join(result['files'].values())}")
    return result
