"""`clipforge demo`: CLIP trained on Flickr8k's human captions, zero-shot on five label sets it never saw.

The default recipe is the one that transferred best in benchmarks/results/language.md within the same 2-core
budget (`recipes.language.RECIPES`). The whole run (loading, caches, training, evaluation) fits `minutes`:
the budget guard shortens training when the machine is slow, and demo.json says so (`step_plan`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from clipforge.recipes.language import RECIPES, LanguageRecipe, run_language

DEFAULT_RECIPE = "pretrained"


@dataclass(frozen=True)
class CaptionDemoConfig:
    recipe: str = DEFAULT_RECIPE  # a name of recipes.language.RECIPES: scratch, lit, pretrained
    minutes: float | None = 15.0  # whole-run wall-clock budget
    max_images: int | None = 500  # per unseen test split (seeded, class-stratified subset); null: all
    captions_per_image: int | None = (
        None  # Flickr8k captions per train image encoded and trained on (None: 5)
    )
    holdout_images: int | None = 100  # Flickr8k train images held out (reported only); None: the recipe's
    train_limit: int | None = None  # use only N Flickr8k train images (smoke runs)
    epochs: float | None = None  # override the recipe's epochs
    image_size: int | None = None  # override the resolution fed to the image tower
    prompts: str = (
        "chosen"  # "chosen": each set's prompt set picked on validation data (recipes.prompts); or a
    )
    # candidate name for all sets: plain, paper, imagenet80, flickr, flickr+paper
    output_dir: str = "runs/demo"
    threads: int = 2
    seed: int = 0
    progress: bool = True


SMOKE_OVERRIDES = dict(
    minutes=None, max_images=40, train_limit=300, epochs=3.0, image_size=64, prompts="plain"
)


def smoke_config(config: CaptionDemoConfig) -> CaptionDemoConfig:
    """The same pipeline end to end on a few hundred images (seconds on a quiet machine)."""
    return replace(config, **SMOKE_OVERRIDES)


def language_recipe(config: CaptionDemoConfig) -> LanguageRecipe:
    if config.recipe not in RECIPES:
        raise ValueError(f"CaptionDemoConfig.recipe={config.recipe!r}; valid: {', '.join(RECIPES)}")
    recipe = RECIPES[config.recipe]
    changes: dict[str, Any] = dict(
        minutes=config.minutes, output_dir=config.output_dir, seed=config.seed, progress=config.progress
    )
    for key in ("epochs", "image_size", "captions_per_image", "holdout_images"):
        if getattr(config, key) is not None:
            changes[key] = getattr(config, key)
    if config.train_limit is not None:
        changes["holdout_images"] = min(
            changes.get("holdout_images", recipe.holdout_images), max(1, config.train_limit // 5)
        )
        changes["batch_size"] = min(recipe.batch_size, 128)
    return replace(recipe, **changes)


def prompt_sets(choice: str) -> dict[str, list[str]]:
    from clipforge.recipes.prompts import PAPER_TEMPLATES, prompts_for

    return {name: prompts_for(name, None if choice == "chosen" else choice) for name in PAPER_TEMPLATES}


def summary_markdown(results: dict[str, Any]) -> str:
    from clipforge.results import markdown_table

    rows = [
        {"set": name, "top1": round(r["top1"], 4), "ci95": [round(v, 4) for v in r["ci95"]], "n": r["n"],
         "classes": r["classes"], "chance": round(r["chance"], 4)}
        for name, r in results["zeroshot"].items()
    ]  # fmt: skip
    retrieval = [{"direction": d, **results["retrieval"][d]} for d in ("text_to_image", "image_to_text")]
    head = [{k: results.get(k) for k in ("recipe", "images_seen", "steps", "step_plan", "wall_time_s")}]
    return (
        "# clipforge demo: CLIP from Flickr8k captions, zero-shot on unseen label sets\n\n"
        + markdown_table(head)
        + "\n## Zero-shot top-1 (test splits, prompt-ensembled, bootstrap 95% interval)\n\n"
        + markdown_table(rows)
        + "\n## Flickr8k val retrieval (1,000 images, 5,000 captions; ties count against)\n\n"
        + markdown_table(retrieval)
        + f"\ncheckpoint: `{results['checkpoint']}`\n"
    )


def run_caption_demo(config: CaptionDemoConfig = CaptionDemoConfig()) -> dict[str, Any]:
    """Train and evaluate; returns the results dict (also output_dir/demo.json and demo.md)."""
    from clipforge.results import write_results

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        recipe = language_recipe(config)
        results = run_language(recipe, prompt_sets(config.prompts), config.max_images, config.train_limit)
    finally:
        torch.set_num_threads(threads)
    results["zeroshot"] = {
        name: {k: r[k] for k in ("top1", "ci95", "n", "classes", "chance")}
        for name, r in results["zeroshot"].items()
    }
    results["demo"] = dataclasses.asdict(config)
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    results["files"] = write_results(Path(config.output_dir), "demo", results, summary_markdown(results))
    return results


def print_summary(results: dict[str, Any]) -> None:
    print(f"{'set':<14} {'top-1':>7} {'95% CI':>15} {'n':>6} {'classes':>7} {'chance':>7}")
    for name, r in results["zeroshot"].items():
        low, high = r["ci95"]
        print(
            f"{name:<14} {r['top1']:>7.1%} {f'{low:.1%}-{high:.1%}':>15} {r['n']:>6} {r['classes']:>7} {r['chance']:>7.1%}"
        )
    for direction in ("text_to_image", "image_to_text"):
        recalls = results["retrieval"][direction]
        print(f"Flickr8k val {direction}: " + "  ".join(f"{k} {v:.1%}" for k, v in recalls.items()))
    print(
        f"recipe {results['recipe']}: {results['images_seen']:,} images seen, {results['step_plan']}, "
        f"{results['wall_time_s']:.0f} s"
    )
