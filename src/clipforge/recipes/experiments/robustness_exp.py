"""`experiment robustness`: CLIP (contrastive, zero-shot) vs a supervised baseline on clean and shifted tests.

Both train the same image encoder on the same images in the same order for the same number of steps; the
supervised one sees labels, CLIP sees template captions. Shifted sets are the test split passed through
`shifts.SHIFTS` at each severity. The paper's effective robustness is the accuracy under shift above what the
trend of supervised ImageNet models predicts from their clean accuracy. With a single baseline model there is
no trend to fit, so here the prediction is proportional: a supervised model with CLIP's clean accuracy is
assumed to keep the baseline's fraction of it, `predicted = clip_clean * supervised_shift / supervised_clean`,
and effective robustness = clip_shift - predicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from clipforge.recipes.experiments.runs import (
    TRAIN_TEMPLATES,
    RunSettings,
    _image_size,
    load_splits,
    train_objective,
)
from clipforge.recipes.experiments.shifts import SEVERITIES, SHIFTS, apply_shift


def effective_robustness(clip_clean: float, clip_shift: float, sup_clean: float, sup_shift: float) -> float:
    return clip_shift - clip_clean * sup_shift / max(sup_clean, 1e-9)


def _hits_per_set(settings: RunSettings, severities) -> tuple[dict[str, dict[str, Tensor]], Any]:
    """({set name: {model: (N,) float hits}} over the clean test split and every shifted copy, the splits);
    the same N test images in every set."""
    from clipforge.data import to_eval_tensors
    from clipforge.data.labelled import LabelledArrays
    from clipforge.recipes.experiments.objectives import hits

    size = _image_size(settings)
    splits = load_splits(settings, size)
    classes = list(splits.train.classes)
    models = {name: train_objective(name, settings, splits)[0] for name in ("supervised", "contrastive")}
    raw = splits.test_arrays

    def evaluate(tensors) -> dict[str, Tensor]:
        return {
            name: hits(objective, tensors.images, tensors.labels, classes, TRAIN_TEMPLATES).float()
            for name, objective in models.items()
        }

    sets = {"clean test": evaluate(splits.test)}
    for shift in SHIFTS:
        for severity in severities:
            images = apply_shift(shift, raw.images, severity, seed=settings.seed)
            sets[f"{shift}-{severity}"] = evaluate(
                to_eval_tensors(LabelledArrays(images, raw.labels, raw.classes), size)
            )
    return sets, splits


def _mean_effective_robustness(sets: dict[str, dict[str, Tensor]], index: Tensor) -> float:
    """Effective robustness averaged over the shifted sets, on the test images `index` (bootstrap resamples)."""
    acc = {name: {m: float(h[index].mean()) for m, h in per.items()} for name, per in sets.items()}
    clean = acc["clean test"]
    shifted = [a for name, a in acc.items() if name != "clean test"]
    return sum(
        effective_robustness(clean["contrastive"], a["contrastive"], clean["supervised"], a["supervised"])
        for a in shifted
    ) / len(shifted)


def _rows(sets: dict[str, dict[str, Tensor]]) -> list[dict[str, Any]]:
    rows = [
        {"dataset": name, "supervised": round(float(per["supervised"].mean()), 4),
         "CLIP": round(float(per["contrastive"].mean()), 4)}
        for name, per in sets.items()
    ]  # fmt: skip
    clean = rows[0]
    for row in rows:
        row["CLIP_minus_supervised"] = round(row["CLIP"] - row["supervised"], 4)
        row["effective_robustness"] = round(
            effective_robustness(clean["CLIP"], row["CLIP"], clean["supervised"], row["supervised"]), 4
        )
    return rows


def run_robustness(
    settings: RunSettings, out_dir: str | Path, seeds: tuple[int, ...] = (), severities=SEVERITIES
) -> dict[str, Any]:
    """Synthetic shifts of the labelled set's test split; on Flickr8k captions (no labelled training set to
    shift or to train a supervised baseline on), zero-shot vs k-shot linear probe per unseen set
    (`caption_probe.run_caption_probe`), for each seed."""
    from clipforge.recipes.experiments.captions import is_caption_data

    if is_caption_data(settings.data):
        from clipforge.recipes.experiments.caption_probe import run_caption_probe

        return run_caption_probe(settings, out_dir, tuple(seeds) or (settings.seed,))
    from clipforge.evaluate.metrics import bootstrap_ci
    from clipforge.recipes.experiments.plotting import plot_scatter
    from clipforge.results import markdown_table, write_results

    sets, splits = _hits_per_set(settings, severities)
    rows, test_images = _rows(sets), len(splits.test_arrays)
    shifted_rows = rows[1:]
    mean = {
        key: round(sum(r[key] for r in shifted_rows) / len(shifted_rows), 4)
        for key in ("supervised", "CLIP", "effective_robustness")
    }
    low, high = bootstrap_ci(lambda index: _mean_effective_robustness(sets, index), test_images, samples=1000)
    mean["effective_robustness_ci95"] = [round(low, 4), round(high, 4)]
    out = Path(out_dir)
    png = plot_scatter(
        [{"dataset": r["dataset"], "supervised": r["supervised"], "CLIP": r["CLIP"]} for r in rows],
        "supervised", "CLIP", "robustness: test accuracy per shifted set", out / "robustness.png",
    )  # fmt: skip
    results = {
        "experiment": "robustness",
        "rows": rows,
        "mean_over_shifts": mean,
        "clean": {"supervised": rows[0]["supervised"], "contrastive": rows[0]["CLIP"]},
        "test_images": test_images,
        "settings": dict(vars(settings)),
        "png": str(png),
    }
    summary = (
        "# Robustness: supervised baseline vs CLIP zero-shot under synthetic shifts\n\n"
        f"Same encoder `{settings.model}`, {len(splits.train)} training images x {settings.epochs:g} epochs; "
        f"{test_images} test images per set. Effective robustness: CLIP's shifted accuracy minus "
        "clip_clean x supervised_shift / supervised_clean (see docs/experiments.md).\n\n"
        + markdown_table(rows)
        + f"\nMean over shifted sets: supervised {mean['supervised']}, CLIP {mean['CLIP']}, "
        f"effective robustness {mean['effective_robustness']:+.4f} (95% paired bootstrap interval over the test "
        f"images: [{low:+.4f}, {high:+.4f}])\n\n![robustness]({png.name})\n"
    )
    results["files"] = write_results(out, "robustness", results, summary)
    return results
