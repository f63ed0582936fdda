"""Few-shot curve of a trained checkpoint: plain linear probe vs zero-shot-anchored probe vs cache vs zero-shot.

k in {1, 2, 4, 8, 16} shots drawn from the train split (the probe's k-shot validation set too), scored on the
test split, mean +- std over seeds. Checks the targets: anchored >= zero-shot at every k, and within one point
of the plain probe at 16 shots. Writes benchmarks/results/fewshot_<dataset>.json/.md/.png.

    .venv/bin/python -m benchmarks.fewshot_curve --checkpoint PATH [--data cifar10=../shared/data/cifar10]
        [--data cifar10-gray=../shared/data/cifar10]
    .venv/bin/python -m benchmarks.fewshot_curve --smoke      # random tiny model, 200 images, seconds
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from clipforge.device import DEFAULT_DEVICE
from clipforge.evaluate.datasets import build_eval_dataset
from clipforge.evaluate.fewshot import FewShotConfig, fewshot_rows, plot_fewshot, run_fewshot
from clipforge.factory import load_model
from clipforge.results import markdown_table, write_results
from clipforge.zeroshot.templates import SIMPLE_TEMPLATES, get_templates

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(
    os.environ.get("CLIPFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def check_targets(curve: dict) -> dict:
    """anchored >= zero-shot at each k; anchored within 1 point of the plain probe at the largest k."""
    zeroshot = curve["zeroshot"]["acc1"]
    mean = {(r["method"], r["shots"]): r["acc1_mean"] for r in curve["rows"]}
    shots = sorted({k for _, k in mean})
    checks = {f"anchored>=zeroshot@{k}": mean.get(("anchored", k), -1) >= zeroshot for k in shots}
    top = shots[-1]
    if ("linear_probe", top) in mean:
        checks[f"anchored>=probe-1pt@{top}"] = mean["anchored", top] >= mean["linear_probe", top] - 0.01
    return checks


SHIFTS = {"gray": "greyscale + Gaussian blur (radius 1 px at 32x32), a fixed covariate shift"}


def shifted(transform, shift: str):
    """The eval transform after a fixed image shift: `gray` = greyscale then a radius-1 Gaussian blur."""
    from PIL import ImageFilter

    if shift not in SHIFTS:
        raise SystemExit(f"--data: unknown shift {shift!r}; valid suffixes: {', '.join(SHIFTS)}")
    return lambda image: transform(image.convert("L").convert("RGB").filter(ImageFilter.GaussianBlur(1.0)))


def run_dataset(model, transform, name: str, root: str, args) -> dict:
    """NAME may carry a shift suffix, e.g. cifar10-gray: the same images and labels under a fixed shift."""
    base, _, shift = name.partition("-") if name.startswith("cifar") else (name, "", "")
    if shift:
        transform = shifted(transform, shift)
    train = build_eval_dataset(base, root, "train", transform)
    test = build_eval_dataset(base, root, "test", transform)
    if args.smoke:
        train.samples, test.samples = train.samples[::25], test.samples[::10]
    try:
        templates = get_templates(base)
    except KeyError:
        templates = SIMPLE_TEMPLATES
    config = FewShotConfig(shots=tuple(args.shots), seeds=tuple(args.seeds), methods=tuple(args.methods))
    curve = run_fewshot(model, train, test, templates, list(test.classes), config)
    checks = check_targets(curve)
    result = {
        "dataset": name,
        "checkpoint": str(args.checkpoint),
        "templates": len(templates),
        "shift": SHIFTS.get(shift, "none"),
        **curve,
        "checks": checks,
    }
    out_name = f"fewshot_{name}" + ("_smoke" if args.smoke else "")
    summary = (
        f"# Few-shot on {name} ({len(train)} train / {len(test)} test), checkpoint `{args.checkpoint}`\n\n"
        + (f"Images under a fixed shift: {SHIFTS[shift]}.\n\n" if shift else "")
        + markdown_table(fewshot_rows(curve))
        + "\nTop-1 mean and std over seeds "
        + ", ".join(map(str, args.seeds))
        + ".\n\nTargets: "
        + ", ".join(f"{k}: {'pass' if v else 'FAIL'}" for k, v in checks.items())
        + "\n"
    )
    out = Path(args.out)
    result["files"] = write_results(out, out_name, result, summary)
    plot_fewshot(curve, out / f"{out_name}.png", title=f"{name}: few-shot vs zero-shot")
    result["files"]["png"] = str(out / f"{out_name}.png")
    print(summary)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", default=None, help="trained clipforge checkpoint (or preset for smoke)"
    )
    parser.add_argument(
        "--data", action="append", default=[], help="NAME=ROOT (repeat); default shared cifar10"
    )
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=["linear_probe", "anchored", "cache"])
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="auto: CUDA when available, else CPU")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.checkpoint = args.checkpoint or "tiny-vit"
        args.shots, args.seeds = [1, 2], [0, 1]
    if not args.checkpoint:
        parser.error("--checkpoint PATH is required (or --smoke)")
    model, transform = load_model(args.checkpoint, device=args.device)
    data = args.data or [f"cifar10={SHARED / 'cifar10'}"]
    results = {}
    for item in data:
        name, _, root = item.partition("=")
        results[name] = run_dataset(model, transform, name, root, args)
    return results


if __name__ == "__main__":
    main()
