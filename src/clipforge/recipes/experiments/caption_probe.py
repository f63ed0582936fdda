"""`experiment robustness --data flickr8k`: zero-shot vs a k-shot linear probe on the same features.

The paper's Fig. 6-7 question: how many labelled examples per class does a linear probe on the model's own
image features need to match its zero-shot classifier? For each seed's contrastive model (the run of
`experiment objectives --data flickr8k`, reused from the cache) and each unseen set with a train split, the
library's few-shot code (`clipforge.evaluate.fewshot.fewshot_curve`, method `linear_probe`: L2 logistic
regression, lambda by cross-validation on the support set) fits k = 1..16 shots per class drawn from a pool
of `SUPPORT_PER_CLASS` train images per class (support seeds 0, 1, 2) and scores the test split, against the
80-template zero-shot head. mnist has no train split, and tiny-imagenet's 200-class probe is left out for
cost (`PROBE_MAX_CLASSES`: its cross-validated fits take ~15 min per model seed on one thread): zero-shot only.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clipforge.recipes.experiments.runs import RunSettings

SHOTS = (1, 2, 4, 8, 16)
SUPPORT_SEEDS = (0, 1, 2)
PROBE_MAX_CLASSES = 100  # sets with more classes get zero-shot only (see the module docstring)


def matching_shots(zeroshot: float, curve: list[tuple[int, float]]) -> float | None:
    """Shots per class at which the probe's accuracy first reaches `zeroshot`, interpolated in log2(k):
    curve = [(k, accuracy)] ascending in k; the first k if it is already above; None if never reached."""
    previous = None
    for k, accuracy in curve:
        if accuracy >= zeroshot:
            if previous is None:
                return float(k)
            a0, lo, hi = previous[1], math.log2(previous[0]), math.log2(k)
            return round(2 ** (lo + (zeroshot - a0) / (accuracy - a0) * (hi - lo)), 2)
        previous = (k, accuracy)
    return None


def set_result(objective, splits, set_name: str, templates: list[str], seed: int) -> dict[str, Any]:
    from clipforge.evaluate.fewshot import FewShotConfig, fewshot_curve
    from clipforge.recipes.experiments.objectives import image_embedding
    from clipforge.zeroshot.classifier import build_classifier

    model = objective.model.eval()
    test = splits.test[set_name]
    with torch.no_grad():
        weights = build_classifier(model, test.classes, templates, cache_dir=False, progress=False).float()
        test_x = F.normalize(image_embedding(model, test.features).float(), dim=-1)
        zeroshot = float(((test_x @ weights).argmax(1) == test.labels).float().mean())
    row: dict[str, Any] = {"set": set_name, "seed": seed, "classes": len(test.classes), "n": len(test.labels),
                           "zeroshot": round(zeroshot, 4)}  # fmt: skip
    if set_name not in splits.support or len(test.classes) > PROBE_MAX_CLASSES:
        return {**row, "probe": {}, "matching_shots": None}
    pool = splits.support[set_name]
    with torch.no_grad():
        pool_x = F.normalize(image_embedding(model, pool.features).float(), dim=-1)
    config = FewShotConfig(shots=SHOTS, seeds=SUPPORT_SEEDS, methods=("linear_probe",))
    scale = float(model.logit_scale.detach().exp())
    got = fewshot_curve((pool_x, pool.labels), (test_x, test.labels), weights, scale, config, progress=False)
    probe = {r["shots"]: r["acc1_per_seed"] for r in got["rows"]}
    curve = [(k, sum(v) / len(v)) for k, v in sorted(probe.items())]
    return {**row, "probe": probe, "matching_shots": matching_shots(zeroshot, curve)}


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set: zero-shot and k-shot probe top-1 (mean over model seeds x support seeds, and the spread of the
    model-seed means), and the matching k (mean over model seeds that reach it; how many do)."""
    rows = []
    for set_name in dict.fromkeys(r["set"] for r in results):
        mine = [r for r in results if r["set"] == set_name]
        zs = torch.tensor([r["zeroshot"] for r in mine])
        row = {"set": set_name, "classes": mine[0]["classes"], "model_seeds": len(mine),
               "zeroshot": round(float(zs.mean()), 4),
               "zeroshot_std": round(float(zs.std()), 4) if len(mine) > 1 else 0.0}  # fmt: skip
        for k in SHOTS:
            per_model = [sum(r["probe"][k]) / len(r["probe"][k]) for r in mine if k in r["probe"]]
            row[f"probe_{k}"] = round(sum(per_model) / len(per_model), 4) if per_model else None
        matched = [r["matching_shots"] for r in mine if r["matching_shots"] is not None]
        row["matching_shots"] = round(sum(matched) / len(matched), 2) if matched else None
        row["seeds_matched"] = f"{len(matched)}/{len(mine)}" if mine[0]["probe"] else "zero-shot only"
        rows.append(row)
    return rows


def run_caption_probe(settings: RunSettings, out_dir: str | Path, seeds: tuple[int, ...]) -> dict[str, Any]:
    from clipforge.recipes.experiments.plotting import plot_probe
    from clipforge.recipes.experiments.runs import load_experiment_splits, train_objective
    from clipforge.results import markdown_table, write_results
    from clipforge.zeroshot.templates import get_templates

    templates = get_templates("imagenet")
    results = []
    for seed in seeds:
        seeded = replace(settings, seed=seed)
        splits = load_experiment_splits(seeded)
        objective, _ = train_objective("contrastive", seeded, splits)
        results += [set_result(objective, splits, name, templates, seed) for name in splits.test]
    summary = summarise(results)
    out = Path(out_dir)
    png = plot_probe(
        summary, SHOTS, "zero-shot vs k-shot linear probe (Flickr8k contrastive)", out / "robustness.png"
    )
    payload = {"experiment": "robustness", "data": settings.data, "seeds": list(seeds), "shots": list(SHOTS),
               "support_seeds": list(SUPPORT_SEEDS), "summary": summary, "per_seed": results,
               "settings": dict(vars(settings)), "png": str(png)}  # fmt: skip
    text = (
        "# Zero-shot vs k-shot linear probe on Flickr8k-trained features\n\n"
        f"Contrastive `{settings.model}` trained on Flickr8k train captions ({settings.epochs:g} epochs), model "
        f"seeds {', '.join(map(str, seeds))}; zero-shot with the 80 ImageNet templates; linear probe on the "
        "same unit image embeddings, k shots per class from a pool of 20 train images per class, support seeds "
        f"{', '.join(map(str, SUPPORT_SEEDS))}, lambda by cross-validation on the support set. `probe_k`: mean over "
        "model x support seeds; `matching_shots`: k at which the probe reaches zero-shot (log2-interpolated; "
        "mean over the model seeds that reach it). Test splits capped as in the objectives run.\n\n"
        + markdown_table(summary) + f"\n![probe]({png.name})\n"
    )  # fmt: skip
    payload["files"] = write_results(out, "robustness", payload, text)
    return payload
