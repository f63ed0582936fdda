"""Is bag-of-words / captioning zero-shot on Flickr8k at chance because of the scoring rule or the model?

Diagnostic for `experiment objectives --data flickr8k` (reads its cached runs: same flags, nothing retrained).
Their zero-shot rule scores a class by the log-probability of its name's words (bag-of-words) or of its
prompt (captioning). On human captions word frequencies are very skewed ("dog" is in 24% of the train
captions), so that score is dominated by each name's prior and the argmax is nearly the same class for every
image. Prior-corrected scoring subtracts each class's score under the model's mean prediction over 256
Flickr8k *training* images (`prior_scores`: a pointwise-mutual-information rule; no test data involved).
Sets with at most 100 classes (captioning's cost grows with classes x images); one prompt, as the curves.

    OMP_NUM_THREADS=1 python -m benchmarks.caption_calibration --seeds 0 1 2 [the objectives run's flags]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch
from tqdm.auto import tqdm

OBJECTIVES = ("contrastive", "bag-of-words", "captioning")
REFERENCE_IMAGES = 256
MAX_CLASSES = 100
_COLUMNS = ("objective", "seed", "set", "raw", "prior_corrected", "classes_predicted_raw",
            "classes_predicted_corrected", "contrastive_images_to_reach", "ratio_at_most")  # fmt: skip


def seed_rows(settings) -> list[dict]:
    from clipforge.recipes.experiments.captions import CURVE_TEMPLATES
    from clipforge.recipes.experiments.objectives import class_scores
    from clipforge.recipes.experiments.runs import load_experiment_splits, train_objective

    splits = load_experiment_splits(settings)
    reference = splits.train_features[:REFERENCE_IMAGES, 0]  # plain view of training images
    templates = list(CURVE_TEMPLATES)
    rows = []
    curves = {}
    for name in OBJECTIVES:
        objective, record = train_objective(name, settings, splits)  # cached by the objectives run
        curves[name] = record["curve"]
        if hasattr(objective, "prior_scores"):
            rows.append(_curve_row(name, settings.seed, objective, splits, reference, record, curves))
        for set_name, fs in splits.test.items():
            if len(fs.classes) > MAX_CLASSES:
                continue
            scores = class_scores(objective, fs.features, fs.classes, templates)  # (N, C)
            row = {"objective": name, "seed": settings.seed, "set": set_name,
                   "raw": round(float((scores.argmax(1) == fs.labels).float().mean()), 4),
                   "classes_predicted_raw": int(scores.argmax(1).unique().numel())}  # fmt: skip
            if hasattr(objective, "prior_scores"):
                with torch.no_grad():
                    prior = objective.eval().prior_scores(reference, fs.classes, templates).cpu()
                corrected = (scores - prior).argmax(1)
                row["prior_corrected"] = round(float((corrected == fs.labels).float().mean()), 4)
                row["classes_predicted_corrected"] = int(corrected.unique().numel())
            else:
                row["prior_corrected"] = row["classes_predicted_corrected"] = None
            rows.append(row)
    return rows


def _curve_row(name, seed, objective, splits, reference, record, curves) -> dict:
    """Prior-corrected accuracy of the final model on the curves' validation sets (mean, as the curves), and
    the images the contrastive run of the same seed needed to reach it: the final images seen over that is an
    upper bound on the paper's efficiency ratio (the corrected curve itself was not recorded)."""
    from clipforge.recipes.experiments.captions import CURVE_TEMPLATES
    from clipforge.recipes.experiments.objectives import class_scores
    from clipforge.recipes.experiments.objectives_exp import images_to_reach

    accuracies = []
    for fs in splits.val.values():
        scores = class_scores(objective, fs.features, fs.classes, list(CURVE_TEMPLATES))
        with torch.no_grad():
            prior = objective.eval().prior_scores(reference, fs.classes, list(CURVE_TEMPLATES)).cpu()
        accuracies.append(float(((scores - prior).argmax(1) == fs.labels).float().mean()))
    level = sum(accuracies) / len(accuracies)
    need = images_to_reach(curves["contrastive"], level)
    return {"objective": name, "seed": seed, "set": "validation mean (curve sets)",
            "raw": round(record["curve"][-1]["val_top1"], 4), "prior_corrected": round(level, 4),
            "contrastive_images_to_reach": None if need is None else round(need),
            "ratio_at_most": None if not need else round(record["images_seen"] / need, 2)}  # fmt: skip


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for key in dict.fromkeys((r["objective"], r["set"]) for r in rows):
        mine = [r for r in rows if (r["objective"], r["set"]) == key]
        row = {"objective": key[0], "set": key[1], "seeds": len(mine)}
        for column in ("raw", "prior_corrected", "ratio_at_most"):
            values = [r[column] for r in mine if r.get(column) is not None]
            row[column] = round(sum(values) / len(values), 4) if values else None
            row[f"{column}_std"] = round(float(torch.tensor(values).std()), 4) if len(values) > 1 else None
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> dict:
    from clipforge.recipes.experiments.runs import RunSettings
    from clipforge.results import markdown_table, write_results

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=float, default=6.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-images", type=int, default=300)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--eval-points", type=int, default=8)
    parser.add_argument("--cache-dir", default="runs/experiments_captions")
    parser.add_argument("--out", default="benchmarks/results/experiments_captions")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = RunSettings(data="flickr8k", model="lite0-small-text", epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, val_images=args.val_images, test_images=args.test_images,
                           eval_points=args.eval_points, cache_dir=args.cache_dir, progress=False)  # fmt: skip
    rows = [r for seed in tqdm(args.seeds, desc="seeds") for r in seed_rows(replace(settings, seed=seed))]
    summary = summarise(rows)
    results = {"benchmark": "caption_calibration", "seeds": args.seeds, "summary": summary, "rows": rows,
               "reference_images": REFERENCE_IMAGES, "settings": dict(vars(settings))}  # fmt: skip
    text = (
        "# Zero-shot scoring rule of bag-of-words and captioning on Flickr8k (diagnostic)\n\n"
        "`raw`: the objectives' zero-shot rule (log-probability of the class name's words / prompt); "
        f"`prior_corrected`: minus that score under the mean prediction over {REFERENCE_IMAGES} Flickr8k training "
        "images. Test splits (capped at 1,000), one prompt, mean over seeds "
        f"{', '.join(map(str, args.seeds))}; `classes_predicted_*`: distinct classes the argmax picks (per seed).\n\n"
        "Reproduce: `OMP_NUM_THREADS=1 python -m benchmarks.caption_calibration --seeds "
        f"{' '.join(map(str, args.seeds))}` (after the objectives run, whose cached runs it reads).\n\n"
        + markdown_table(summary)
        + "\n`validation mean` rows: the final model on the curves' validation sets; `ratio_at_most`: its images "
        "seen over the images the same seed's contrastive run needed to reach that accuracy (an upper bound on "
        "the paper's ratio: the prior-corrected curve was not recorded during training).\n\n## Per seed\n\n"
        + markdown_table([{k: r.get(k) for k in _COLUMNS} for r in rows])
    )  # fmt: skip
    results["files"] = write_results(args.out, "calibration", results, text)
    print(text)
    return results


if __name__ == "__main__":
    main()
