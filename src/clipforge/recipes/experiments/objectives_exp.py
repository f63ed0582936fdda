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

from clipforge.recipes.experiments.runs import (
    RunSettings,
    eval_templates,
    load_experiment_splits,
    reported_sets,
    train_objective,
)

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


def relative_levels(curves: dict[str, list[dict]], chance: float, fractions=(0.5, 0.75, 0.9)) -> list[float]:
    """Accuracy levels for curves far below LEVELS (caption data): `fractions` of the best objective's gain over
    chance, plus each other objective's best accuracy (the level the slower one does reach)."""
    best = {name: max(p["val_top1"] for p in curve) for name, curve in curves.items()}
    top = max(best.values())
    levels = {round(chance + f * (top - chance), 4) for f in fractions}
    levels |= {round(b, 4) for b in best.values() if chance < b < top}
    return sorted(levels)


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

    all_runs: dict[str, list[dict]] = {name: [] for name in LANGUAGE_OBJECTIVES}
    for seed in seeds:
        seeded = replace(settings, seed=seed)
        splits = load_experiment_splits(seeded)
        templates = list(eval_templates(splits))
        for name in LANGUAGE_OBJECTIVES:
            objective, record = train_objective(name, seeded, splits)
            per_set = {
                set_name: round(accuracy(objective, inputs, labels, classes, templates), 4)
                for set_name, (inputs, labels, classes) in reported_sets(splits).items()
            }
            test = sum(per_set.values()) / len(per_set)
            all_runs[name].append({"seed": seed, "test_top1": round(test, 4), "test_per_set": per_set,
                                   **record})  # fmt: skip
    return all_runs, splits


def pair_ratio(fast: list[dict], slow: list[dict]) -> dict[str, Any]:
    """The paper's efficiency at the slower objective's best: images `slow` needed to first reach its best
    validation accuracy over the images `fast` needed to reach the same (None where either is undefined, e.g.
    the slow one is never better than at initialisation)."""
    level = max(p["val_top1"] for p in slow)
    need_slow, need_fast = images_to_reach(slow, level), images_to_reach(fast, level)
    if not need_slow:  # its best is the untrained model's accuracy: no learning to compare
        need_slow = None
    return {"level": round(level, 4), "images_slow": need_slow, "images_fast": need_fast,
            "ratio": _ratio(need_slow, need_fast)}  # fmt: skip


PAIRS = (("contrastive", "bag-of-words"), ("bag-of-words", "captioning"))  # (fast, slow) as in the paper


def _final_row(name: str, runs: list[dict], curve: list[dict]) -> dict[str, Any]:
    """Mean and spread over seeds of one objective's runs (+ the mean test top-1 of each test set)."""
    tests = torch.tensor([r["test_top1"] for r in runs])
    row = {
        "objective": name,
        "test_top1": round(float(tests.mean()), 4),
        "test_top1_std": round(float(tests.std()), 4) if len(runs) > 1 else 0.0,
        "seeds": len(runs),
        "final_val_top1": round(curve[-1]["val_top1"], 4),
        "images_seen": runs[0]["images_seen"],
        "train_wall_time_s": round(sum(r["train_wall_time_s"] for r in runs) / len(runs), 1),
        "final_loss": round(sum(r["final_loss"] for r in runs) / len(runs), 4),
    }
    sets = runs[0]["test_per_set"]
    if len(sets) > 1:
        row.update({k: round(sum(r["test_per_set"][k] for r in runs) / len(runs), 4) for k in sets})
    return row


def _per_seed(all_runs: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """One row per (objective, seed); the pair ratios per seed (their spread is the claim's error bar)."""
    rows = []
    for name, runs in all_runs.items():
        for i, r in enumerate(runs):
            row = {"objective": name, "seed": r["seed"], "test_top1": r["test_top1"],
                   "final_val_top1": round(r["curve"][-1]["val_top1"], 4),
                   "best_val_top1": round(max(p["val_top1"] for p in r["curve"]), 4)}  # fmt: skip
            for fast, slow in PAIRS:  # every row has every column (None where it is not the slow one)
                got = pair_ratio(all_runs[fast][i]["curve"], r["curve"]) if name == slow else {"ratio": None}
                row[f"images_vs_{fast}_at_best"] = got["ratio"]
            rows.append(row)
    return rows


def _summary(settings: RunSettings, results: dict[str, Any], png: Path) -> str:
    from clipforge.results import markdown_table

    return (
        "# Objectives: zero-shot accuracy vs images seen\n\n"
        f"Data `{settings.data}`: {results['train_images']} training images, {settings.epochs:g} epochs, batch "
        f"{settings.batch_size}, model `{settings.model}`; curves: {results['curve_sets']} "
        f"({results['val_images']} images, one prompt); final accuracy: {results['test_sets']} "
        f"({results['test_images']} images, {results['test_templates']} prompt(s)). Chance {results['chance']:.3f}. "
        f"Seeds {', '.join(map(str, results['seeds']))} ({results['seeds_vary']}); "
        "accuracies and curves are means over seeds, `test_top1_std` their spread.\n\n"
        + markdown_table(results["final"])
        + "\n## Images needed to reach a validation accuracy (paper: BoW/contrastive 4x, captioning/BoW 3x)\n\n"
        + markdown_table(results["efficiency"])
        + "\n## At the slower objective's best accuracy (seed-mean curves)\n\n"
        + markdown_table(results["pairs"])
        + "\n## Per seed (`images_vs_X_at_best`: the same ratio on each seed's own curves)\n\n"
        + markdown_table(results["per_seed"])
        + f"\n![curves]({png.name})\n"
    )


def run_objectives(settings: RunSettings, out_dir: str | Path, seeds: tuple[int, ...] = ()) -> dict[str, Any]:
    """Train (or reuse) each objective for every seed (default: settings.seed alone); the table reports the mean
    and spread over seeds, the curves and images-to-reach ratios use the seed-mean curve."""
    from clipforge.recipes.experiments.plotting import plot_curves
    from clipforge.recipes.experiments.runs import Splits, chance
    from clipforge.results import write_results

    seeds = tuple(seeds) or (settings.seed,)
    all_runs, splits = _train_every_seed(settings, seeds)
    curves = {name: mean_curve([r["curve"] for r in runs]) for name, runs in all_runs.items()}
    out = Path(out_dir)
    floor = chance(splits)
    labelled = isinstance(splits, Splits)
    levels = LEVELS if labelled else relative_levels(curves, floor)
    png = plot_curves(curves, floor, "objectives: same encoder, same images", out / "objectives.png")
    tests = reported_sets(splits)
    results = {
        "experiment": "objectives",
        "seeds": list(seeds),
        "final": [_final_row(name, runs, curves[name]) for name, runs in all_runs.items()],
        "per_seed": _per_seed(all_runs),
        "efficiency": efficiency_table(curves, levels),
        "pairs": [{"fast": f, "slow": s, **pair_ratio(curves[f], curves[s])} for f, s in PAIRS],
        "curves": curves,
        "chance": floor,
        "seeds_vary": "data subset, validation split, init and order"
        if labelled
        else "init, caption draw and batch order; cached views and evaluation subsets are fixed",
        "train_images": len(splits.train),
        "val_images": len(splits.val.labels) if labelled else sum(len(v.labels) for v in splits.val.values()),
        "curve_sets": "held-out training images" if labelled else ", ".join(splits.val) + " (train splits)",
        "test_sets": ", ".join(tests) + (" split" if labelled else " (test splits)"),
        "test_images": sum(len(labels) for _, labels, _ in tests.values()),
        "test_templates": len(eval_templates(splits)),
        "settings": {k: v for k, v in vars(settings).items()},
        "png": str(png),
    }
    results["files"] = write_results(out, "objectives", results, _summary(settings, results, png))
    return results
