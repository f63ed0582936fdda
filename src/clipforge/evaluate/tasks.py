"""The evaluation jobs behind `clipforge eval`: a model and plain settings in, a report folder out.

Each task writes <out>/<name>.json (CLIP_benchmark key names where they overlap) and <name>.md, plus
<name>.png for curves and shift, and returns the JSON content with a "files" entry.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from clipforge.evaluate.datasets import EvalDataset, build_eval_dataset
from clipforge.evaluate.report import plot_bars, write_report


@dataclass(frozen=True)
class EvalData:
    """Which labelled data to evaluate on. `train`/`test` name split folders or CSVs explicitly (then the
    dataset is read as an image folder or CSV); otherwise both splits come from `root`."""

    dataset: str = "cifar10"
    root: str | None = None
    train: str | None = None
    test: str | None = None
    split: str = "test"
    limit: int | None = None  # at most this many samples per split (a fixed random subset)
    templates: str | None = None  # template set name; default: the dataset's, else "a photo of a {}."

    def load(self, split: str, transform) -> EvalDataset:
        explicit = {"train": self.train, "test": self.test}.get(split)
        root = explicit or self.root
        if root is None:
            raise ValueError(f"--data-root (or --{split}) is required for dataset {self.dataset!r}")
        name = self.dataset
        if explicit and name in ("cifar10", "cifar100"):
            name = "imagefolder"
        dataset = build_eval_dataset(name, os.path.expanduser(root), split, transform)
        return subsample(dataset, self.limit)

    def prompts(self, dataset: EvalDataset) -> tuple[list[str], list[str]]:
        """(templates, class names) for `dataset`."""
        from clipforge.zeroshot.templates import SIMPLE_TEMPLATES, get_templates

        try:
            templates = get_templates(self.templates or self.dataset)
        except KeyError:
            templates = SIMPLE_TEMPLATES
        return templates, list(dataset.classes)


def subsample(dataset: EvalDataset, limit: int | None, seed: int = 0) -> EvalDataset:
    """Keep a fixed random `limit` of the samples (all when limit is None or larger)."""
    if limit and len(dataset.samples) > limit:
        dataset.samples = random.Random(seed).sample(dataset.samples, limit)
    return dataset


def zeroshot_task(
    model: nn.Module, transform, data: EvalData, out, model_name: str, batch_size: int = 256, cache_dir=None
):
    """Zero-shot top-1/top-5/mean per-class recall. `cache_dir` as in `build_classifier` (heads only)."""
    from clipforge.evaluate.classification import evaluate_zeroshot

    dataset = data.load(data.split, transform)
    templates, classnames = data.prompts(dataset)
    metrics = evaluate_zeroshot(
        model, dataset, classnames, templates, batch_size=batch_size, cache_dir=cache_dir
    )
    result = {
        "task": "zeroshot_classification",
        "dataset": data.dataset,
        "model": model_name,
        "metrics": metrics,
    }
    rows = [{"dataset": data.dataset, **{k: metrics[k] for k in ("acc1", "acc5", "mean_per_class_recall")}}]
    result["files"] = write_report(out, f"zeroshot_{data.dataset}", result, rows, f"Zero-shot: {model_name}")
    return result


@dataclass(frozen=True)
class CaptionData:
    captions: str  # CSV (path,caption[,split]) or JSONL
    image_root: str | None = None
    split: str | None = None
    limit: int | None = None  # the first `limit` images and their captions


def retrieval_task(
    model: nn.Module, transform, data: CaptionData, out, model_name: str, batch_size: int = 256
):
    from clipforge.evaluate.retrieval import evaluate_retrieval, load_captions

    root = os.path.expanduser(data.image_root) if data.image_root else None
    captions = load_captions(os.path.expanduser(data.captions), root, data.split)
    if data.limit:
        keep = min(data.limit, len(captions.image_paths))
        mask = [int(i) < keep for i in captions.caption_image]
        captions.image_paths = captions.image_paths[:keep]
        captions.captions = [c for c, m in zip(captions.captions, mask, strict=True) if m]
        captions.caption_image = captions.caption_image[mask]
    metrics = evaluate_retrieval(model, captions, transform, batch_size=batch_size)
    result = {
        "task": "zeroshot_retrieval",
        "captions": data.captions,
        "model": model_name,
        "metrics": metrics,
    }
    rows = [
        {"direction": d, **{f"R@{k}": metrics[f"{d}_retrieval_recall@{k}"] for k in (1, 5, 10)}}
        for d in ("image", "text")
    ]
    result["files"] = write_report(out, "retrieval", result, rows, f"Retrieval: {model_name}")
    return result


def linear_probe_task(
    model: nn.Module,
    transform,
    data: EvalData,
    out,
    model_name: str,
    *,
    features: str = "auto",
    probe=None,
    cache_dir: str | os.PathLike | bool | None = None,
    batch_size: int = 256,
):
    """The paper's probe. `cache_dir` as in `extract_features`: False/None computes afresh, True or a
    folder caches features under a key of the image tower's weights, the transform and every file's stat."""
    from clipforge.evaluate.features import extract_features
    from clipforge.evaluate.linear_probe import ProbeConfig, linear_probe

    train, test = data.load("train", transform), data.load("test", transform)
    kwargs = dict(batch_size=batch_size, cache_dir=cache_dir)
    train_xy = extract_features(model, train, features, **kwargs)
    test_xy = extract_features(model, test, features, **kwargs)
    out_probe = linear_probe(*train_xy, *test_xy, probe or ProbeConfig())
    metrics = {k: out_probe[k] for k in ("acc1", "acc5", "mean_per_class_recall", "lambda")}
    result = {"task": "linear_probe", "dataset": data.dataset, "model": model_name, "features": features,
              "metrics": metrics, "val_scores": {f"{k:.3e}": v for k, v in out_probe["val_scores"].items()}}  # fmt: skip
    rows = [{"dataset": data.dataset, **metrics}]
    name = f"linear_probe_{data.dataset}"
    result["files"] = write_report(out, name, result, rows, f"Linear probe: {model_name}")
    return result


def fewshot_task(
    model: nn.Module,
    transform,
    data: EvalData,
    out,
    model_name: str,
    config=None,
    batch_size=256,
    cache_dir=None,
):
    """Few-shot curves; `cache_dir` as in `extract_features` (features and the zero-shot head)."""
    from clipforge.evaluate.fewshot import FewShotConfig, fewshot_rows, plot_fewshot, run_fewshot

    train, test = data.load("train", transform), data.load("test", transform)
    templates, classnames = data.prompts(test)
    config = config or FewShotConfig()
    curve = run_fewshot(model, train, test, templates, classnames, config, batch_size, cache_dir=cache_dir)
    result = {"task": "fewshot", "dataset": data.dataset, "model": model_name, **curve}
    name = f"fewshot_{data.dataset}"
    result["files"] = write_report(out, name, result, fewshot_rows(curve), f"Few-shot: {model_name}")
    png = Path(out) / f"{name}.png"
    plot_fewshot(curve, png, title=f"{data.dataset}: {model_name}")
    result["files"]["png"] = str(png)
    return result


def shift_task(
    models: dict[str, tuple[nn.Module, object]],
    data: dict[str, str],
    out,
    *,
    limit: int | None = None,
    reference: str | None = None,
    baseline: tuple[list[float], list[float]] | None = None,
    batch_size: int = 256,
    cache_dir=None,
):
    """Zero-shot accuracy of each model (name -> (model, transform)) on each dataset (name -> root), and
    effective robustness against `baseline` (id, ood accuracies of baseline models) or the first model."""
    from clipforge.evaluate.shift import evaluate_shift, shift_table

    by_model = {}
    for model_name, (model, transform) in models.items():
        datasets = {
            name: subsample(build_eval_dataset(name, os.path.expanduser(root), "test", transform), limit)
            for name, root in data.items()
        }
        by_model[model_name] = evaluate_shift(model, datasets, batch_size=batch_size, cache_dir=cache_dir)
    rows = shift_table(by_model, reference=reference, baseline=baseline)
    result = {"task": "distribution_shift", "results": by_model, "table": rows}
    result["files"] = write_report(out, "shift", result, rows, "Distribution shift (top-1 %)")
    png = Path(out) / "shift.png"
    plot_bars(rows, list(by_model), png, "Distribution shift", "top-1 (%)")
    result["files"]["png"] = str(png)
    return result
