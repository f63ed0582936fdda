"""`experiment prompts --data flickr8k`: one template vs the paper's 80-template ensemble on the unseen sets.

The contrastive model of `experiment objectives --data flickr8k` (same cache key: reused, not retrained) is
scored zero-shot on every unseen set's test split with "a photo of a {}." and with the 80 ImageNet templates
(and, for reference, the six Flickr8k-style templates of `recipes.prompts`). Per set and seed: the gain of
the ensemble and its 95% paired bootstrap interval (test images resampled, the same resample for both).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clipforge.recipes.experiments.runs import RunSettings

ONE = "a photo of a {}."


def prompt_sets() -> dict[str, list[str]]:
    from clipforge.recipes.prompts import FLICKR_STYLE
    from clipforge.zeroshot.templates import get_templates

    return {
        "one template": [ONE],
        "80 templates": get_templates("imagenet"),
        "flickr style (6)": FLICKR_STYLE,
    }


def paired_gain(better: Tensor, base: Tensor, seed: int = 0) -> dict[str, Any]:
    """Mean of better - base over the items (float hits) and its 95% paired bootstrap interval."""
    from clipforge.evaluate.metrics import bootstrap_ci

    diff = better - base
    low, high = bootstrap_ci(lambda i: float(diff[i].mean()), len(diff), samples=1000, seed=seed)
    return {"gain": round(float(diff.mean()), 4), "ci95": [round(low, 4), round(high, 4)]}


def seed_rows(settings: RunSettings, splits=None) -> list[dict[str, Any]]:
    """One row per test set (+ "all sets": every test image pooled) for one seed; `splits` loaded if None."""
    from clipforge.recipes.experiments.objectives import hits
    from clipforge.recipes.experiments.runs import load_experiment_splits, reported_sets, train_objective

    splits = splits or load_experiment_splits(settings)
    objective, _ = train_objective("contrastive", settings, splits)
    sets = prompt_sets()
    pooled: dict[str, list[Tensor]] = {name: [] for name in sets}
    rows = []
    for set_name, (inputs, labels, classes) in reported_sets(splits).items():
        got = {name: hits(objective, inputs, labels, classes, t).float() for name, t in sets.items()}
        for name, value in got.items():
            pooled[name].append(value)
        rows.append(_row(set_name, settings.seed, got))
    rows.append(_row("all sets", settings.seed, {name: torch.cat(v) for name, v in pooled.items()}))
    return rows


def _row(set_name: str, seed: int, got: dict[str, Tensor]) -> dict[str, Any]:
    one, many, flickr = got["one template"], got["80 templates"], got["flickr style (6)"]
    gain = paired_gain(many, one, seed)
    return {
        "set": set_name, "seed": seed, "n": len(one), "one_template": round(float(one.mean()), 4),
        "templates_80": round(float(many.mean()), 4), "flickr_style_6": round(float(flickr.mean()), 4),
        "gain_80_over_1": gain["gain"], "gain_ci95": gain["ci95"],
    }  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set over seeds: mean accuracies, mean gain, its seed spread and how many seeds' intervals exclude 0."""
    out = []
    for set_name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == set_name]
        gains = torch.tensor([r["gain_80_over_1"] for r in mine])
        out.append({
            "set": set_name, "seeds": len(mine),
            **{k: round(sum(r[k] for r in mine) / len(mine), 4)
               for k in ("one_template", "templates_80", "flickr_style_6")},
            "gain_mean": round(float(gains.mean()), 4),
            "gain_std": round(float(gains.std()), 4) if len(mine) > 1 else 0.0,
            "seeds_gain_ci_above_0": sum(r["gain_ci95"][0] > 0 for r in mine),
            "seeds_gain_ci_below_0": sum(r["gain_ci95"][1] < 0 for r in mine),
        })  # fmt: skip
    return out


def run_caption_prompts(settings: RunSettings, out_dir: str | Path, seeds: tuple[int, ...]) -> dict[str, Any]:
    from clipforge.recipes.experiments.plotting import plot_bars
    from clipforge.results import markdown_table, write_results

    rows = [row for seed in seeds for row in seed_rows(replace(settings, seed=seed))]
    summary_rows = summarise(rows)
    out = Path(out_dir)
    png = plot_bars(
        [r["set"] for r in summary_rows],
        {name: [r[key] for r in summary_rows] for name, key in
         (("1 template", "one_template"), ("80 templates", "templates_80"), ("flickr style", "flickr_style_6"))},
        "zero-shot top-1 (test, mean over seeds)", "prompts: contrastive on Flickr8k captions", out / "prompts.png",
    )  # fmt: skip
    results = {"experiment": "prompts", "data": settings.data, "seeds": list(seeds), "summary": summary_rows,
               "rows": rows, "settings": dict(vars(settings)), "png": str(png)}  # fmt: skip
    text = (
        "# Prompts on Flickr8k captions: one template vs the 80-template ensemble\n\n"
        f"Contrastive `{settings.model}` (locked EfficientNet-Lite0 trunk, text transformer from scratch) trained "
        f"on Flickr8k train captions, {settings.epochs:g} epochs; zero-shot on the unseen sets' test splits. "
        f"Seeds {', '.join(map(str, seeds))}. `gain_ci95`: 95% paired bootstrap interval of the ensemble's gain "
        "over one template (test images resampled); `seeds_gain_ci_above_0`: seeds whose interval is above 0.\n\n"
        "## Over seeds\n\n" + markdown_table(summary_rows)
        + "\n## Per seed\n\n" + markdown_table(rows) + f"\n![prompts]({png.name})\n"
    )  # fmt: skip
    results["files"] = write_results(out, "prompts", results, text)
    return results
