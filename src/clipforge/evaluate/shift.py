"""Distribution shift: one model over a list of datasets, the paper's table form, effective robustness.

Effective robustness (Taori et al. 2020, used in the CLIP paper): out-of-distribution accuracy above what a
baseline trend predicts from in-distribution accuracy. The trend is linear in logit space; it is fitted to
baseline (id, ood) pairs, or with a single baseline it has slope one through that point.
"""

from __future__ import annotations

import math

from torch import nn

from clipforge.evaluate.classification import evaluate_zeroshot
from clipforge.zeroshot.classnames import get_classnames
from clipforge.zeroshot.templates import get_templates


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def fit_trend(baseline_id: list[float], baseline_ood: list[float]) -> tuple[float, float]:
    """(slope, intercept) of logit(ood) = slope * logit(id) + intercept; slope 1 for a single baseline."""
    if len(baseline_id) != len(baseline_ood) or not baseline_id:
        raise ValueError("baseline_id and baseline_ood must be non-empty lists of equal length")
    xs, ys = [_logit(a) for a in baseline_id], [_logit(a) for a in baseline_ood]
    if len(xs) == 1:
        return 1.0, ys[0] - xs[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 1.0
    return slope, my - slope * mx


def effective_robustness(id_acc: float, ood_acc: float, trend: tuple[float, float]) -> float:
    """ood_acc minus the trend's prediction at id_acc (accuracies in [0, 1])."""
    slope, intercept = trend
    return ood_acc - _sigmoid(slope * _logit(id_acc) + intercept)


def evaluate_shift(
    model: nn.Module,
    datasets: dict[str, object],
    *,
    batch_size: int = 256,
    device=None,
    cache_dir=None,
    progress: bool = True,
) -> dict[str, dict]:
    """Zero-shot metrics per dataset. ImageNet-family sets use ImageNet's templates; ObjectNet-style sets with
    `class_groups` are scored through the 1,000-way ImageNet head reduced to their classes."""
    results = {}
    for name, dataset in datasets.items():
        groups = getattr(dataset, "class_groups", None)
        if groups is not None and any(len(g) > 1 for g in groups):
            classnames, class_groups = get_classnames("imagenet"), groups
        else:
            classnames, class_groups = list(dataset.classes), None
        try:
            templates = get_templates(name)
        except KeyError:
            templates = get_templates("imagenet")
        results[name] = evaluate_zeroshot(
            model, dataset, classnames, templates, class_groups=class_groups, batch_size=batch_size,
            device=device, cache_dir=cache_dir, progress=progress,
        )  # fmt: skip
    return results


def shift_table(
    results_by_model: dict[str, dict[str, dict]],
    reference: str | None = None,
    baseline: tuple[list[float], list[float]] | None = None,
) -> list[dict]:
    """Rows (dataset, <model A> acc1 %, <model B> acc1 %, ...) plus, for each non-reference dataset,
    `ER <model>`: effective robustness (points) of each model against the trend from `baseline` or, if none,
    a slope-one trend through the first model's (reference, dataset) accuracies."""
    models = list(results_by_model)
    datasets = list(dict.fromkeys(d for r in results_by_model.values() for d in r))
    reference = reference or datasets[0]
    rows = []
    for dataset in datasets:
        row: dict = {"dataset": dataset}
        for model in models:
            acc = results_by_model[model].get(dataset, {}).get("acc1")
            row[model] = round(100 * acc, 2) if acc is not None else ""
        if dataset != reference:
            for model in models:
                res = results_by_model[model]
                if dataset not in res or reference not in res:
                    continue
                if baseline is not None:
                    trend = fit_trend(*baseline)
                else:
                    first = results_by_model[models[0]]
                    trend = fit_trend([first[reference]["acc1"]], [first[dataset]["acc1"]])
                er = effective_robustness(res[reference]["acc1"], res[dataset]["acc1"], trend)
                row[f"ER {model}"] = round(100 * er, 2)
        rows.append(row)
    return rows
