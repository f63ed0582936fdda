"""`clipforge eval zeroshot|retrieval|linear-probe|fewshot|shift`: the paper's evaluations, with reports.

Every subcommand writes <out>/<name>.json (CLIP_benchmark key names where they overlap), <name>.md and, for
curves and shift, <name>.png. `--smoke` runs end to end in seconds on a random tiny model and a few images.
The jobs themselves live in clipforge.evaluate.tasks; this module only turns flags into their arguments.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from clipforge.commands.options import user_path
from clipforge.device import DEFAULT_DEVICE

SMOKE_DATA = Path(
    os.environ.get("CLIPFORGE_SHARED_DATA", Path(__file__).resolve().parents[3].parent / "shared" / "data")
)


def _model(spec: str, args):
    from clipforge.factory import load_model

    return load_model(spec, args.pretrained, args.device)


def _data(args):
    from clipforge.evaluate.tasks import EvalData

    return EvalData(
        dataset=args.dataset, root=args.data_root, train=args.train, test=args.test, split=args.split,
        limit=args.limit, templates=args.templates,
    )  # fmt: skip


def cmd_zeroshot(args) -> dict:
    from clipforge.evaluate.tasks import zeroshot_task

    model, transform = _model(args.model, args)
    return zeroshot_task(
        model, transform, _data(args), args.out, args.model, args.batch_size, not args.no_cache
    )


def cmd_retrieval(args) -> dict:
    from clipforge.evaluate.tasks import CaptionData, retrieval_task

    model, transform = _model(args.model, args)
    data = CaptionData(args.captions, args.image_root, args.split, args.limit)
    return retrieval_task(model, transform, data, args.out, args.model, args.batch_size)


def cmd_linear_probe(args) -> dict:
    from clipforge.evaluate.linear_probe import ProbeConfig
    from clipforge.evaluate.tasks import linear_probe_task

    model, transform = _model(args.model, args)
    return linear_probe_task(
        model, transform, _data(args), args.out, args.model, features=args.features,
        probe=ProbeConfig(max_iter=args.max_iter, val_fraction=args.val_fraction),
        cache_dir=not args.no_cache, batch_size=args.batch_size,
    )  # fmt: skip


def cmd_fewshot(args) -> dict:
    from dataclasses import replace

    from clipforge.evaluate.fewshot import FewShotConfig
    from clipforge.evaluate.tasks import fewshot_task

    model, transform = _model(args.model, args)
    config = FewShotConfig(shots=tuple(args.shots), seeds=tuple(args.seeds))
    if args.methods:
        config = replace(config, methods=tuple(args.methods))
    return fewshot_task(
        model, transform, _data(args), args.out, args.model, config, args.batch_size, not args.no_cache
    )


def cmd_shift(args) -> dict:
    from clipforge.evaluate.tasks import shift_task

    data = {}
    for item in args.data:
        name, _, root = item.partition("=")
        if not root:
            raise ValueError(f"--data {item!r}: expected NAME=ROOT, e.g. imagenet-r=/data/imagenet-r")
        data[name] = os.path.expanduser(root)
    models = {
        Path(spec).stem if Path(spec).expanduser().exists() else spec: _model(spec, args)
        for spec in args.model
    }
    baseline = (args.baseline_id, args.baseline_ood) if args.baseline_id and args.baseline_ood else None
    return shift_task(
        models, data, args.out, limit=args.limit, reference=args.reference, baseline=baseline,
        batch_size=args.batch_size, cache_dir=not args.no_cache,
    )  # fmt: skip


def _common(parser: argparse.ArgumentParser, many_models: bool = False) -> None:
    if many_models:
        parser.add_argument(
            "--model", action="append", help="preset or checkpoint; repeat for model A, B, ..."
        )
    else:
        parser.add_argument("--model", default="tiny-vit", help="preset name or checkpoint path")
    parser.add_argument("--pretrained", default=None, help="pretrained tag or weights path for a preset")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="auto: CUDA when available, else CPU")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="use at most this many samples per split")
    parser.add_argument("--out", type=user_path, default="results/eval", help="report folder")
    parser.add_argument("--smoke", action="store_true", help="random tiny model, few shared images, seconds")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="do not cache zero-shot heads and image features on disk (default: cached under "
        "$CLIPFORGE_CACHE_DIR or ~/.cache/clipforge, keyed exactly by weights, prompts, transform and files)",
    )


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="cifar10", help="cifar10|cifar100|imagefolder|csv|imagenet...")
    parser.add_argument("--data-root", type=user_path, default=None)
    parser.add_argument(
        "--train", type=user_path, default=None, help="train split folder/CSV (imagefolder, csv)"
    )
    parser.add_argument(
        "--test", type=user_path, default=None, help="test split folder/CSV (imagefolder, csv)"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--templates", default=None, help="template set name (default: the dataset's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipforge eval", description=__doc__)
    sub = parser.add_subparsers(dest="task", required=True)
    p = sub.add_parser("zeroshot", help="zero-shot top-1/top-5/mean per-class recall")
    _common(p), _dataset_args(p)
    p = sub.add_parser("retrieval", help="Recall@1/5/10 both directions")
    _common(p)
    p.add_argument("--captions", type=user_path, default=None, help="CSV path,caption[,split] or JSONL")
    p.add_argument("--image-root", type=user_path, default=None)
    p.add_argument("--split", default=None)
    p = sub.add_parser("linear-probe", help="the paper's L-BFGS logistic-regression probe")
    _common(p), _dataset_args(p)
    p.add_argument("--features", default="auto", choices=["auto", "pre-projection", "embedding"])
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p = sub.add_parser("fewshot", help="k-shot curves vs zero-shot")
    _common(p), _dataset_args(p)
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--methods", nargs="+", default=None,
        help="of linear_probe anchored tip_adapter tip_adapter_f zs_lp clap (default: all)",
    )  # fmt: skip
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
        raise ValueError("--captions is required (CSV path,caption or JSONL)")
    if args.task == "shift" and not (args.model and args.data):
        raise ValueError("shift needs --model (repeatable) and --data NAME=ROOT (repeatable)")
    result = COMMANDS[args.task](args)
    print(f"wrote {', '.join(result['files'].values())}")
    return result
