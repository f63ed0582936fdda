"""`clipforge demo`: CLIP trained on Flickr8k's human captions (2 CPU cores, <= 15 min), then zero-shot on five
label sets it never saw + retrieval. `--recipe cifar10`: the earlier demo (from scratch on CIFAR-10 templates)."""

from __future__ import annotations

import argparse
from dataclasses import replace


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipforge demo",
        description=__doc__,
        epilog="Any field of the recipe's config (recipes.caption_demo.CaptionDemoConfig, or demo.DemoConfig for "
        "--recipe cifar10) can be set as key=value, e.g. `clipforge demo epochs=40`.",
    )
    parser.add_argument("overrides", nargs="*", help="config key=value overrides (after --config)")
    parser.add_argument(
        "--recipe",
        default="pretrained",
        choices=("pretrained", "lit", "scratch", "cifar10"),
        help="caption recipes (docs/language.md): pretrained (default: both towers pretrained, the best "
        "transfer), lit, scratch; cifar10: the CIFAR-10 template demo",
    )
    parser.add_argument("--config", help="YAML file of config fields (e.g. configs/demo.yaml for cifar10)")
    parser.add_argument("--data", help="training images: WebDataset shards, CIFAR python, CSV or ImageFolder")
    parser.add_argument(
        "--test-data",
        help="test images (default: --data if given, else ../shared/data/cifar10; its test split)",
    )
    parser.add_argument("--out", help="output folder (default runs/demo)")
    parser.add_argument(
        "--minutes", type=float, help="wall-clock budget; 0 = no budget, train the full recipe"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few thousand images, seconds: checks the pipeline"
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.recipe != "cifar10":
        return captions_demo(args)
    return cifar10_demo(args)


def captions_demo(args: argparse.Namespace) -> dict:
    from clipforge.overrides import load_config
    from clipforge.recipes.caption_demo import (
        CaptionDemoConfig,
        print_summary,
        run_caption_demo,
        smoke_config,
    )

    if args.data or args.test_data:
        raise SystemExit(
            "--data/--test-data are for --recipe cifar10; the caption recipes read ../shared/data"
        )
    config = load_config(CaptionDemoConfig, args.config, [f"recipe={args.recipe}", *args.overrides])
    if args.smoke:
        config = smoke_config(config)
    if args.out:
        config = replace(config, output_dir=args.out)
    if args.minutes is not None:
        config = replace(config, minutes=args.minutes or None)  # 0: no budget
    if args.no_progress:
        config = replace(config, progress=False)
    results = run_caption_demo(config)
    print_summary(results)
    print(f"checkpoint: {results['checkpoint']}")
    print(f"results: {results['files']['json']}")
    return results


def cifar10_demo(args: argparse.Namespace) -> dict:
    from clipforge.overrides import load_config
    from clipforge.recipes.demo import DemoConfig, run_demo, smoke_config

    config = load_config(DemoConfig, args.config, args.overrides)
    if args.smoke:
        config = smoke_config(config)
    test_data = args.test_data or args.data  # a download (CIFAR python, ImageFolder) carries its test split
    flags = {"data": args.data, "test_data": test_data, "output_dir": args.out}
    config = replace(config, **{k: v for k, v in flags.items() if v is not None})
    if args.minutes is not None:
        config = replace(config, minutes=args.minutes or None)  # 0: no budget
    if args.no_progress:
        config = replace(config, progress=False)
    results = run_demo(config)
    print(
        f"zero-shot top-1 {results['zeroshot_top1']:.1%} on {results['test_images']} test images | "
        f"linear probe {results['linear_probe_top1']:.1%} | retrieval mAP {results['retrieval_map']:.3f} | "
        f"{results['images_seen']:,} images seen in {results['wall_time_s']:.0f} s"
    )
    print(f"checkpoint: {results['checkpoint']}")
    print(f"learning curve: {results['curve_png']}")
    print(f"results: {results['files']['json']}")
    return results
