"""Recipe (c) with EfficientNet-Lite0 fed 128 px vs 224 px (its native size), scored on validation data only.

Each size trains the pretrained recipe (both towers locked, projections trained, 10 epochs) on 2,500 Flickr8k
train images (500 of them held out, 2 captions per training image) and reports text<->image recall on the
held-out train images and zero-shot top-1 on validation splits: imagenette and flowers5 `train`, CIFAR-10
`train` (500, class-stratified). run_language also scores tiny test subsets (max_images=50): those numbers are
dropped here and never read, so nothing is chosen on a test split.

    python -m benchmarks.language_resolution            # -> benchmarks/results/language_resolution.{json,md}
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from benchmarks.harness import machine_info
from clipforge.results import markdown_table, write_results

VALIDATION = {"imagenette": None, "flowers5": None, "cifar10": 500}  # set -> images kept of its train split


def validation_top1(checkpoint: str) -> dict[str, float]:
    import clipforge
    from clipforge.recipes.frozen import image_feature_cache, view_config
    from clipforge.recipes.prompts import prompts_for
    from clipforge.recipes.unseen import UNSEEN_SETS, load_set
    from clipforge.zeroshot.classifier import build_classifier

    model, _ = clipforge.load(checkpoint, device="cpu")
    model.eval().requires_grad_(False)
    out = {}
    for spec in (s for s in UNSEEN_SETS if s.name in VALIDATION):
        data, classes = load_set(spec, "train", VALIDATION[spec.name])
        features = image_feature_cache(model, data.images, 1, view_config(model), progress=False)[:, 0]
        classifier = build_classifier(model, classes, prompts_for(spec.name), cache_dir=False, progress=False)
        logits = F.normalize(model.visual.project(features.float()), dim=-1) @ classifier
        out[spec.name] = round(float(logits.argmax(1).eq(data.labels).float().mean()), 4)
    return out


def run_size(size: int, train_limit: int, out_dir: str) -> dict:
    from clipforge.recipes.caption_demo import prompt_sets
    from clipforge.recipes.language import RECIPES, run_language

    start = time.perf_counter()
    recipe = replace(RECIPES["pretrained"], image_size=size, captions_per_image=2, minutes=None,
                     output_dir=f"{out_dir}/s{size}", progress=False)  # fmt: skip
    results = run_language(recipe, prompt_sets("chosen"), max_images=50, train_limit=train_limit)
    held = results["holdout_retrieval"]
    return {
        "size": size,
        **{f"holdout_t2i_R@{k}": round(held["text_to_image"][f"R@{k}"], 4) for k in (1, 5, 10)},
        **{f"holdout_i2t_R@{k}": round(held["image_to_text"][f"R@{k}"], 4) for k in (1, 5, 10)},
        **{f"val_{name}": top1 for name, top1 in validation_top1(results["checkpoint"]).items()},
        "cache_s": results["cache_s"],
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128,224")
    parser.add_argument("--train-limit", type=int, default=2500)
    parser.add_argument("--work", default="runs/language_resolution")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    machine = machine_info(2)
    rows = [run_size(int(s), args.train_limit, args.work) for s in args.sizes.split(",")]
    results = {"rows": rows, "train_limit": args.train_limit, "machine": machine}
    summary = (
        "# Recipe (c): EfficientNet-Lite0 input resolution (validation data only)\n\n"
        + f"{args.train_limit} Flickr8k train images (500 held out), 2 captions each, 10 epochs. "
        + "Command: `python -m benchmarks.language_resolution`.\n\n"
        + markdown_table(rows)
    )
    write_results(args.out, "language_resolution", results, summary)
    return results


if __name__ == "__main__":
    main()
