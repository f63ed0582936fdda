"""k-shot curves: plain linear probe, zero-shot-anchored probe and the cache baseline against zero-shot.

Works on cached unit image embeddings (N, E) so every method sees the same features. The plain probe chooses
its L2 strength on a k-shot validation set drawn from the rest of the training split (never the test split);
the anchored probe and the cache baseline use the support set only.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from clipforge.evaluate.anchored import AnchoredConfig, cache_adapter_logits, fit_anchored_probe
from clipforge.evaluate.linear_probe import ProbeConfig, linear_probe
from clipforge.evaluate.metrics import classification_metrics
from clipforge.figures import pyplot, save_figure

METHODS = ("zeroshot", "linear_probe", "anchored", "cache")


@dataclass(frozen=True)
class FewShotConfig:
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("linear_probe", "anchored", "cache")
    probe: ProbeConfig = ProbeConfig()
    anchored: AnchoredConfig = AnchoredConfig()


def sample_shots(labels: Tensor, k: int, seed: int, exclude: Tensor | None = None) -> Tensor:
    """k indices per class, chosen with `seed`, skipping `exclude`; a class with fewer gets all it has."""
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


def run_method(
    method: str,
    support: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor] | None,
    test: tuple[Tensor, Tensor],
    zeroshot_weights: Tensor,
    logit_scale: float,
    config: FewShotConfig,
) -> dict[str, float]:
    (sx, sy), (tx, ty) = support, test
    if method == "zeroshot":
        logits = logit_scale * tx @ zeroshot_weights
    elif method == "linear_probe":
        result = linear_probe(sx, sy, tx, ty, config.probe, val=val, progress=False)
        return {k: result[k] for k in ("acc1", "acc5", "mean_per_class_recall", "lambda")}
    elif method == "anchored":
        logits = fit_anchored_probe(sx, sy, zeroshot_weights, logit_scale, config.anchored).logits(tx)
    elif method == "cache":
        logits = cache_adapter_logits(tx, sx, sy, zeroshot_weights, logit_scale)
    else:
        raise ValueError(f"unknown few-shot method {method!r}; valid: {', '.join(METHODS)}")
    return classification_metrics(logits, ty)


def fewshot_curve(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    zeroshot_weights: Tensor,
    logit_scale: float,
    config: FewShotConfig = FewShotConfig(),
    progress: bool = True,
) -> dict:
    """Accuracy per (method, k) over seeds. train/test: (unit features (N, E), labels (N,)).

    Returns {"zeroshot": metrics, "rows": [{method, shots, acc1_mean, acc1_std, acc1_per_seed, ...}]}."""
    zeroshot_weights = zeroshot_weights.float().to(train[0].device)
    zeroshot = run_method("zeroshot", train, None, test, zeroshot_weights, logit_scale, config)
    per_run: dict[tuple[str, int], list[dict]] = {}
    jobs = [(k, seed) for k in config.shots for seed in config.seeds]
    for k, seed in tqdm(jobs, desc="few-shot", disable=not progress):
        support_idx = sample_shots(train[1], k, seed)
        val_idx = sample_shots(train[1], k, seed + 10_000, exclude=support_idx)
        support = (train[0][support_idx], train[1][support_idx])
        val = (train[0][val_idx], train[1][val_idx])
        for method in config.methods:
            result = run_method(method, support, val, test, zeroshot_weights, logit_scale, config)
            per_run.setdefault((method, k), []).append(result)
    rows = []
    for (method, k), results in per_run.items():
        acc = [r["acc1"] for r in results]
        rows.append(
            {
                "method": method,
                "shots": k,
                "acc1_mean": statistics.fmean(acc),
                "acc1_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "mean_per_class_recall_mean": statistics.fmean(r["mean_per_class_recall"] for r in results),
                "acc1_per_seed": acc,
            }
        )
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


def fewshot_rows(result: dict) -> list[dict]:
    """The curve as table rows: zero-shot first (0 shots), then (method, shots, mean, std) per run."""
    rows = [{"method": "zeroshot", "shots": 0, "acc1_mean": result["zeroshot"]["acc1"], "acc1_std": 0.0}]
    rows += [{k: r[k] for k in ("method", "shots", "acc1_mean", "acc1_std")} for r in result["rows"]]
    return rows


def plot_fewshot(result: dict, path, title: str = "few-shot") -> None:
    """PNG: top-1 (mean ± std over seeds) per method vs shots, with the zero-shot line."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
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
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
