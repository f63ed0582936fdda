"""`experiment objectives`: zero-shot accuracy against images seen for contrastive, bag-of-words and captioning.

The paper's Fig. 2: to reach the same zero-shot ImageNet accuracy, bag-of-words prediction needs 4x the
images of the contrastive objective and transformer captioning 3x more than bag-of-words. Here the three
objectives train the same image encoder on the same image/caption stream for the same number of images;
curves are on held-out training images, the final accuracy on the test split.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from clipforge.recipes.experiments.runs import TRAIN_TEMPLATES, RunSettings, load_splits, train_objective

LANGUAGE_OBJECTIVES = ("contrastive", "bag-of-words", "captioning")
LEVELS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)


def images_to_reach(curve: list[dict], level: float) -> float | None:
    """Images seen when the curve first reaches `level` (linear between evaluations); None if never."""
    previous = None
    for point in curve:
        if point["val_top1"] >= level:
            if previous is None:
                return float(point["images_seen"])
            x0, y0, x1, y1 = (
                previous["images_seen"],
                previous["val_top1"],
                point["images_seen"],
                point["val_top1"],
            )
            return x0 + (level - y0) / (y1 - y0) * (x1 - x0)
        previous = point
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else round(a / b, 2)


def efficiency_table(curves: dict[str, list[dict]], levels=LEVELS) -> list[dict[str, Any]]:
    """Per accuracy level: images each objective needed and the paper's two ratios."""
    rows = []
    for level in levels:
        need = {name: images_to_reach(curve, level) for name, curve in curves.items()}
        rows.append(
            {
                "val_top1": level,
                **{f"images_{n}": None if v is None else round(v) for n, v in need.items()},
                "bow_over_contrastive": _ratio(need.get("bag-of-words"), need.get("contrastive")),
                "captioning_over_bow": _ratio(need.get("captioning"), need.get("bag-of-words")),
            }
        )
    return rows


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    """Pointwise mean of curves evaluated at the same images-seen points (runs differing only by seed)."""
    return [
        {
            "images_seen": points[0]["images_seen"],
            "val_top1": sum(p["val_top1"] for p in points) / len(points),
        }
        for points in zip(*curves)
    ]


def _train_every_seed(settings: RunSettings, seeds: tuple[int, ...]):
    """({objective: [run record + test_top1 per seed]}, the last seed's splits)."""
    from clipforge.recipes.experiments.objectives import accuracy
    from clipforge.recipes.experiments.runs import _image_size

    all_runs: dict[str, list[dict]] = {name: [] for name in LANGUAGE_OBJECTIVES}
    for seed in seeds:
        seeded = replace(settings, seed=seed)
        splits = load_splits(seeded, _image_size(seeded))
        classes = list(splits.train.classes)
        for name in LANGUAGE_OBJECTIVES:
            objective, record = train_objective(name, seeded, splits)
            test = accuracy(objective, splits.test.images, splits.test.labels, classes, TRAIN_TEMPLATES)
            all_runs[name].append({"seed": seed, "test_top1": round(test, 4), **record})
    return all_runs, splits


def _final_row(name: str, runs: list[dict], curve: list[dict]) -> dict[str, Any]:
    """Mean and spread over seeds of one objective's runs."""
    tests = torch.tensor([r["test_top1"] for r in runs])
    return {
        "objective": name,
        "test_top1": round(float(tests.mean()), 4),
        "test_top1_std": round(float(tests.std()), 4) if len(runs) > 1 else 0.0,
        "seeds": len(runs),
        "final_val_top1": round(curve[-1]["val_top1"], 4),
        "images_seen": runs[0]["images_seen"],
        "train_wall_time_s": round(sum(r["train_wall_time_s"] for r in runs) / len(runs), 1),
        "final_loss": round(sum(r["final_loss"] for r in runs) / len(runs), 4),
    }


def _summary(settings: RunSettings, results: dict[str, Any], png: Path) -> str:
    from clipforge.results import markdown_table

    per_seed = results["per_seed"]
    return (
        "# Objectives: zero-shot accuracy vs images seen\n\n"
        f"{results['train_images']} training images, {settings.epochs:g} epochs, batch {settings.batch_size}, "
        f"model `{settings.model}`; curves on {results['val_images']} held-out training images (one prompt), "
        f"final accuracy on {results['test_images']} test images ({len(TRAIN_TEMPLATES)}-prompt ensemble). "
        f"Chance {results['chance']:.2f}. Seeds {', '.join(map(str, results['seeds']))} (data subset, validation "
        "split, init and order); accuracies and curves are means over seeds, `test_top1_std` their spread.\n\n"
        + markdown_table(results["final"])
        + "\n## Images needed to reach a validation accuracy (paper: BoW/contrastive 4x, captioning/BoW 3x)\n\n"
        + markdown_table(results["efficiency"])
        + "\n## Per seed\n\n"
        + markdown_table([{"objective": n, **r} for n, rows in per_seed.items() for r in rows])
        + f"\n![curves]({png.name})\n"
    )


def run_objectives(settings: RunSettings, out_dir: str | Path, seeds: tuple[int, ...] = ()) -> dict[str, Any]:
    """Train (or reuse) each objective for every seed (default: settings.seed alone); the table reports the mean
    and spread over seeds, the curves and images-to-reach ratios use the seed-mean curve."""
    from clipforge.recipes.experiments.plotting import plot_curves
    from clipforge.results import write_results

    seeds = tuple(seeds) or (settings.seed,)
    all_runs, splits = _train_every_seed(settings, seeds)
    curves = {name: mean_curve([r["curve"] for r in runs]) for name, runs in all_runs.items()}
    per_seed = {
        name: [
            {"seed": r["seed"], "test_top1": r["test_top1"], "final_val_top1": r["curve"][-1]["val_top1"],
             "images_to_30pct": images_to_reach(r["curve"], 0.3)}
            for r in runs
        ]
        for name, runs in all_runs.items()
    }  # fmt: skip
    out = Path(out_dir)
    chance = 1 / len(splits.train.classes)
    png = plot_curves(curves, chance, "objectives: same encoder, same images", out / "objectives.png")
    results = {
        "experiment": "objectives",
        "seeds": list(seeds),
        "final": [_final_row(name, runs, curves[name]) for name, runs in all_runs.items()],
        "per_seed": per_seed,
        "efficiency": efficiency_table(curves),
        "curves": curves,
        "chance": chance,
        "train_images": len(splits.train),
        "val_images": len(splits.val.labels),
        "test_images": len(splits.test.labels),
        "settings": {k: v for k, v in vars(settings).items()},
        "png": str(png),
    }
    results["files"] = write_results(out, "objectives", results, _summary(settings, results, png))
    return results
