"""`experiment prompts`: zero-shot accuracy of the contrastive model with four kinds of class prompt.

The paper reports about +5 ImageNet points from prompt engineering plus ensembling over bare class names.
Prompt sets: the bare class name, "a photo of a {}.", the paper's CIFAR-10 templates (18), its 80 ImageNet
templates, and for reference the 12 templates the model was trained on (its captions are template captions,
so this is the in-distribution prompt set, not a finding of the paper).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipforge.recipes.experiments.runs import (
    TRAIN_TEMPLATES,
    RunSettings,
    _image_size,
    load_splits,
    train_objective,
)


def prompt_sets() -> dict[str, list[str]]:
    from clipforge.zeroshot.templates import get_templates

    return {
        "bare class name": ["{}"],
        "a photo of a {}.": ["a photo of a {}."],
        "CIFAR-10 templates (18)": get_templates("cifar10"),
        "ImageNet ensemble (80)": get_templates("imagenet"),
        "training templates (12)": list(TRAIN_TEMPLATES),
    }


def run_prompts(settings: RunSettings, out_dir: str | Path, seeds: tuple[int, ...] = ()) -> dict[str, Any]:
    """The prompt sets on the labelled set's validation and test splits; on Flickr8k captions, one template vs
    the 80-template ensemble on every unseen set for each seed (`caption_prompts.run_caption_prompts`)."""
    from clipforge.recipes.experiments.captions import is_caption_data

    if is_caption_data(settings.data):
        from clipforge.recipes.experiments.caption_prompts import run_caption_prompts

        return run_caption_prompts(settings, out_dir, tuple(seeds) or (settings.seed,))
    from clipforge.evaluate.metrics import bootstrap_ci
    from clipforge.recipes.experiments.objectives import accuracy, hits
    from clipforge.recipes.experiments.plotting import plot_bars
    from clipforge.results import markdown_table, write_results

    splits = load_splits(settings, _image_size(settings))
    classes = list(splits.train.classes)
    objective, record = train_objective("contrastive", settings, splits)
    rows, test_hits = [], []
    for name, templates in prompt_sets().items():
        row = {"prompts": name, "templates": len(templates)}
        row["val_top1"] = round(
            accuracy(objective, splits.val.images, splits.val.labels, classes, templates), 4
        )
        test_hits.append(hits(objective, splits.test.images, splits.test.labels, classes, templates).float())
        row["test_top1"] = round(float(test_hits[-1].mean()), 4)
        rows.append(row)
    for row, right in zip(rows, test_hits):
        row["test_gain_over_bare"] = round(row["test_top1"] - rows[0]["test_top1"], 4)
        low, high = bootstrap_ci(lambda i, r=right: float(r[i].mean() - test_hits[0][i].mean()), len(right))
        row["gain_ci95"] = f"[{low:+.3f}, {high:+.3f}]"  # paired bootstrap over the test images
    out = Path(out_dir)
    png = plot_bars(
        [r["prompts"] for r in rows],
        {"validation": [r["val_top1"] for r in rows], "test": [r["test_top1"] for r in rows]},
        "zero-shot top-1",
        "prompts: contrastive model",
        out / "prompts.png",
    )
    results = {
        "experiment": "prompts",
        "rows": rows,
        "run": {k: record[k] for k in ("images_seen", "steps", "train_wall_time_s")},
        "test_images": len(splits.test.labels),
        "settings": dict(vars(settings)),
        "png": str(png),
    }
    summary = (
        "# Prompts: bare names vs templates vs ensembles\n\n"
        f"Contrastive `{settings.model}` trained on {len(splits.train)} images x {settings.epochs:g} epochs "
        f"({record['images_seen']} images seen) with the 12 training templates as captions; "
        f"{len(splits.test.labels)} test images; `gain_ci95`: 95% paired bootstrap interval of the gain over "
        "bare names (test images resampled).\n\n" + markdown_table(rows) + f"\n![prompts]({png.name})\n"
    )
    results["files"] = write_results(out, "prompts", results, summary)
    return results
