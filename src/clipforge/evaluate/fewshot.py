"""k-shot curves: few-shot methods against the zero-shot classifier, on cached unit image embeddings.

Every method sees the same k-shot support set (k images per class drawn from a train split) and nothing else:
settings a method needs are chosen by cross-validation on the support set (`clipforge.evaluate.support`),
never on the test split, which only scores. Methods (`METHODS`):

- `linear_probe`: the paper's L2 logistic regression, lambda by support-set cross-validation.
- `anchored`: the zero-shot-anchored probe (`evaluate.anchored`).
- `tip_adapter`, `tip_adapter_f`: Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022; `evaluate.tip_adapter`).
- `zs_lp`, `clap`: the zero-shot-initialised probe and CLAP's class-adaptive penalty (Silva-Rodriguez et al.,
  CVPR 2024; `evaluate.prototype_probe`).

Each run records what it chose (lambda, alpha/beta, steps) so a report can show the regularisation per k.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from clipforge.evaluate.anchored import AnchoredConfig, fit_anchored_probe
from clipforge.evaluate.linear_probe import ProbeConfig, fit_logistic_regression, search_lambda_cv
from clipforge.evaluate.metrics import classification_metrics
from clipforge.evaluate.prototype_probe import PrototypeProbeConfig, fit_clap, fit_zs_lp
from clipforge.evaluate.tip_adapter import TipConfig, fit_tip_adapter, fit_tip_adapter_f
from clipforge.figures import pyplot, save_figure

DEFAULT_METHODS = ("linear_probe", "anchored", "tip_adapter", "tip_adapter_f", "zs_lp", "clap")


@dataclass(frozen=True)
class FewShotConfig:
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = DEFAULT_METHODS
    probe: ProbeConfig = ProbeConfig(max_iter=300)
    probe_folds: int = 4
    anchored: AnchoredConfig = AnchoredConfig()
    tip: TipConfig = TipConfig()
    prototype: PrototypeProbeConfig = PrototypeProbeConfig()


@dataclass(frozen=True)
class Support:
    features: Tensor  # (N, E) unit embeddings
    labels: Tensor  # (N,)
    zeroshot_weights: Tensor  # (E, C) unit columns
    logit_scale: float
    seed: int


Fitted = tuple[Callable[[Tensor], Tensor], dict]  # (test features -> logits, what was chosen)


def fit_zeroshot(s: Support, config: FewShotConfig) -> Fitted:
    return (lambda x: s.logit_scale * x.float() @ s.zeroshot_weights), {}


def fit_linear_probe(s: Support, config: FewShotConfig) -> Fitted:
    num_classes = s.zeroshot_weights.shape[1]
    lam, _ = search_lambda_cv(s.features, s.labels, num_classes, config.probe_folds, config.probe)
    p = config.probe
    classifier = fit_logistic_regression(
        s.features, s.labels, lam, num_classes, p.max_iter, p.tolerance_grad, dtype=p.dtype
    )
    return classifier.logits, {"lambda": lam}


def fit_anchored(s: Support, config: FewShotConfig) -> Fitted:
    probe = fit_anchored_probe(s.features, s.labels, s.zeroshot_weights, s.logit_scale, config.anchored)
    return probe.logits, {"lambda": probe.penalty if math.isfinite(probe.penalty) else "inf (zero-shot)"}


def fit_tip(s: Support, config: FewShotConfig) -> Fitted:
    adapter = fit_tip_adapter(s.features, s.labels, s.zeroshot_weights, s.logit_scale, config.tip)
    return adapter.logits, {"alpha": adapter.alpha, "beta": adapter.beta}


def fit_tip_f(s: Support, config: FewShotConfig) -> Fitted:
    adapter = fit_tip_adapter_f(s.features, s.labels, s.zeroshot_weights, s.logit_scale, config.tip, s.seed)
    return adapter.logits, {"alpha": adapter.alpha, "beta": adapter.beta}


def fit_zslp(s: Support, config: FewShotConfig) -> Fitted:
    probe = fit_zs_lp(s.features, s.labels, s.zeroshot_weights, s.logit_scale, config.prototype)
    return probe.logits, {"steps": probe.steps}


def fit_clap_probe(s: Support, config: FewShotConfig) -> Fitted:
    probe = fit_clap(s.features, s.labels, s.zeroshot_weights, s.logit_scale, config.prototype)
    return probe.logits, {"mean_multiplier": float(probe.penalty.mean())}


METHODS: dict[str, Callable[[Support, FewShotConfig], Fitted]] = {
    "zeroshot": fit_zeroshot,
    "linear_probe": fit_linear_probe,
    "anchored": fit_anchored,
    "tip_adapter": fit_tip,
    "tip_adapter_f": fit_tip_f,
    "zs_lp": fit_zslp,
    "clap": fit_clap_probe,
}


def check_methods(methods) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown few-shot method(s) {unknown}; valid: {', '.join(METHODS)}")


def sample_shots(labels: Tensor, k: int, seed: int, exclude: Tensor | None = None) -> Tensor:
    """k indices per class, chosen with `seed`, skipping `exclude`; a class with fewer gets all it has.
    For one seed the sets are nested: the k-shot set is the first k of every class's seeded order."""
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    allowed = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        allowed[exclude.cpu()] = False
    picked = []
    for c in labels.unique():
        idx = ((labels == c) & allowed).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=generator)[:k]])
    return torch.cat(picked).sort().values


def run_method(method: str, support: Support, test: tuple[Tensor, Tensor], config: FewShotConfig) -> dict:
    """Fit `method` on the support set, score it on test: metrics + what it chose."""
    check_methods([method])
    logits_of, chosen = METHODS[method](support, config)
    with torch.no_grad():
        metrics = classification_metrics(logits_of(test[0]), test[1])
    return {**metrics, "chosen": chosen}


def summarise(method: str, k: int, results: list[dict]) -> dict:
    acc = [r["acc1"] for r in results]
    return {
        "method": method,
        "shots": k,
        "acc1_mean": statistics.fmean(acc),
        "acc1_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
        "mean_per_class_recall_mean": statistics.fmean(r["mean_per_class_recall"] for r in results),
        "acc1_per_seed": acc,
        "chosen_per_seed": [r["chosen"] for r in results],
    }


def fewshot_curve(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    zeroshot_weights: Tensor,
    logit_scale: float,
    config: FewShotConfig = FewShotConfig(),
    progress: bool = True,
) -> dict:
    """Accuracy per (method, k) over seeds. train/test: (unit features (N, E), labels (N,)); the support
    sets are drawn from train. Returns {"zeroshot": metrics, "rows": [{method, shots, acc1_mean, acc1_std,
    acc1_per_seed, chosen_per_seed, ...}], "seeds", "shots"}."""
    check_methods(config.methods)
    weights = zeroshot_weights.float().to(train[0].device)
    x, y = train[0].float(), train[1].long()
    zeroshot = run_method("zeroshot", Support(x, y, weights, logit_scale, 0), test, config)
    per_run: dict[tuple[str, int], list[dict]] = {}
    jobs = [(k, seed, m) for k in config.shots for seed in config.seeds for m in config.methods]
    bar = tqdm(jobs, desc="few-shot", disable=not progress)
    for k, seed, method in bar:
        bar.set_postfix_str(f"k={k} seed={seed} {method}")
        idx = sample_shots(y, k, seed)
        support = Support(x[idx], y[idx], weights, logit_scale, seed)
        per_run.setdefault((method, k), []).append(run_method(method, support, test, config))
    rows = [summarise(method, k, results) for (method, k), results in per_run.items()]
    return {"zeroshot": zeroshot, "rows": rows, "seeds": list(config.seeds), "shots": list(config.shots)}


def run_fewshot(
    model,
    train,
    test,
    templates: list[str],
    classnames: list[str],
    config: FewShotConfig = FewShotConfig(),
    batch_size: int = 256,
    progress: bool = True,
    cache_dir=None,
) -> dict:
    """The few-shot curve of `model` on labelled datasets `train`/`test`: unit image embeddings of both,
    the prompt-ensembled zero-shot head, then `fewshot_curve`. `cache_dir` as in `extract_features`."""
    from clipforge.evaluate.features import extract_features
    from clipforge.zeroshot.classifier import build_classifier

    kwargs = dict(batch_size=batch_size, progress=progress, cache_dir=cache_dir)
    train_xy = extract_features(model, train, "embedding", **kwargs)
    test_xy = extract_features(model, test, "embedding", **kwargs)
    weights = build_classifier(model, classnames, templates, **kwargs).cpu()
    return fewshot_curve(
        train_xy, test_xy, weights, float(model.logit_scale.detach().exp()), config, progress
    )


def format_chosen(chosen: list[dict]) -> str:
    """'lambda 1e-2, 1e-2, inf' -- one value per seed for each key a method chose."""
    if not chosen or not chosen[0]:
        return ""

    def fmt(value: float | str) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value).split(" ")[0]

    return "; ".join(f"{key} " + ", ".join(fmt(c[key]) for c in chosen) for key in chosen[0])


def fewshot_rows(result: dict) -> list[dict]:
    """The curve as table rows: zero-shot first (0 shots), then (method, shots, mean, std, chosen)."""
    rows = [
        {"method": "zeroshot", "shots": 0, "acc1_mean": result["zeroshot"]["acc1"], "acc1_std": 0.0,
         "chosen (per seed)": ""}
    ]  # fmt: skip
    rows += [
        {**{k: r[k] for k in ("method", "shots", "acc1_mean", "acc1_std")},
         "chosen (per seed)": format_chosen(r.get("chosen_per_seed", []))}
        for r in sorted(result["rows"], key=lambda r: (r["shots"], r["method"]))
    ]  # fmt: skip
    return rows


def plot_fewshot(result: dict, path, title: str = "few-shot") -> None:
    """PNG: top-1 (mean ± std over seeds) per method vs shots, with the zero-shot line."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for method in dict.fromkeys(r["method"] for r in result["rows"]):
        rows = sorted((r for r in result["rows"] if r["method"] == method), key=lambda r: r["shots"])
        ax.errorbar(
            [r["shots"] for r in rows],
            [100 * r["acc1_mean"] for r in rows],
            yerr=[100 * r["acc1_std"] for r in rows],
            marker="o",
            capsize=3,
            label=method,
        )
    ax.axhline(100 * result["zeroshot"]["acc1"], color="k", linestyle="--", label="zero-shot")
    ax.set_xscale("log", base=2)
    ax.set_xticks(result["shots"], [str(k) for k in result["shots"]])
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
