"""`clipforge experiment objectives|prompts|robustness [--smoke] [--out DIR]`: the paper's findings, small scale.

`--data` a labelled set (default CIFAR-10): template captions, zero-shot on the same classes. `--data flickr8k`:
Flickr8k's human captions on the locked EfficientNet-Lite0 trunk's cached features, zero-shot on the unseen
label sets (robustness then compares zero-shot with a k-shot linear probe). Trained runs are cached under
--cache-dir (keyed by their settings), so `prompts` and `robustness` reuse the contrastive run of `objectives`.
See docs/experiments.md.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

EXPERIMENTS = ("objectives", "prompts", "robustness")
DEFAULT_OUT = "benchmarks/results/experiments"


def main(argv: list[str] | None = None) -> dict:
    from clipforge.recipes.experiments.captions import CAPTION_MODEL, is_caption_data
    from clipforge.recipes.experiments.runs import RunSettings, smoke_settings

    defaults = RunSettings()
    parser = argparse.ArgumentParser(prog="clipforge experiment", description=__doc__)
    parser.add_argument("name", choices=EXPERIMENTS)
    parser.add_argument("--smoke", action="store_true", help="a few hundred images, one epoch: seconds")
    parser.add_argument(
        "--out", default=None, help=f"results folder (default {DEFAULT_OUT}; smoke: runs/...)"
    )
    parser.add_argument(
        "--data", default=defaults.data,
        help="labelled set with train and test splits (template captions), or flickr8k (human captions, "
        "zero-shot on the unseen sets)",
    )  # fmt: skip
    parser.add_argument(
        "--model", default=None,
        help=f"preset for the image encoder and text sizes (default {defaults.model}; flickr8k: {CAPTION_MODEL})",
    )  # fmt: skip
    parser.add_argument("--train-images", type=int, default=None, help="random subset of the train split")
    parser.add_argument("--val-images", type=int, default=defaults.val_images, help="curve images (per set)")
    parser.add_argument("--test-images", type=int, default=None, help="stratified test subset (per set)")
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval-points", type=int, default=defaults.eval_points, help="points on each curve")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=(),
        help="train every model once per seed (objectives; prompts and robustness on flickr8k)",
    )
    parser.add_argument(
        "--cache-dir", default=defaults.cache_dir, help="trained runs, reused when settings match"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    settings = replace(
        defaults,
        data=args.data,
        model=args.model or (CAPTION_MODEL if is_caption_data(args.data) else defaults.model),
        train_images=args.train_images,
        val_images=args.val_images,
        test_images=args.test_images,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        eval_points=args.eval_points,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    if args.smoke:
        settings = smoke_settings(settings)
    out = args.out or (f"runs/experiments-smoke/{args.name}" if args.smoke else DEFAULT_OUT)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        results = _run(args.name, settings, out, tuple(args.seeds))
    finally:
        torch.set_num_threads(threads)
    with open(results["files"]["markdown"], encoding="utf-8") as summary:
        print(summary.read())
    return results


def _run(name: str, settings, out: str, seeds: tuple[int, ...]) -> dict:
    if name == "objectives":
        from clipforge.recipes.experiments.objectives_exp import run_objectives

        return run_objectives(settings, out, seeds)
    if name == "prompts":
        from clipforge.recipes.experiments.prompts_exp import run_prompts

        return run_prompts(settings, out, seeds)
    from clipforge.recipes.experiments.robustness_exp import run_robustness

    return run_robustness(settings, out, seeds)
