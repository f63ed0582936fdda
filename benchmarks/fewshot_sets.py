"""The labelled sets of the few-shot benchmark and their cached features (unit image embeddings + zero-shot head).

Sets (../shared/data; none is a training label of the caption recipes): imagenette, tiny-imagenet, flowers5
(each with a small `train` split for support sets and a `test` split), CIFAR-10 (train/test), and mnist, which
has only a test split: its support pool is a seeded, class-stratified 100 images per class held out of t10k,
and it is scored on the other images (the two never overlap). Support pools are capped at `pool_per_class`
images per class, test splits at `max_test` images (seeded, class-stratified), both before any feature is
computed. `extract_set` returns a plain dict of tensors (`FEATURE_KEYS`) that `benchmarks.fewshot_curve` reads,
so features computed once (or on another machine) can be re-scored without the model.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

SHARED = Path(
    os.environ.get("CLIPFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
FEATURE_KEYS = ("train_features", "train_labels", "test_features", "test_labels", "zeroshot_weights")


@dataclass(frozen=True)
class FewShotSet:
    name: str
    folder: str  # under SHARED
    templates: str  # the paper's template set (clipforge.zeroshot.templates)
    layout: str = "csv"  # csv: train.csv/test.csv + classes.txt; cifar: images/<split>/<class>/
    pool_from_test: int = 0  # > 0: no train split; this many test images per class form the support pool


SETS = {
    s.name: s
    for s in (
        FewShotSet("imagenette", "zeroshot/imagenette", "imagenet"),
        FewShotSet("tiny-imagenet", "zeroshot/tiny-imagenet", "imagenet"),
        FewShotSet("flowers5", "zeroshot/flowers5", "flowers102"),
        FewShotSet("mnist", "zeroshot/mnist", "mnist", pool_from_test=100),
        FewShotSet("cifar10", "cifar10", "cifar10", layout="cifar"),
    )
}


def stratified(samples: list, per_class: int | None, seed: int) -> tuple[list, list]:
    """(kept, rest): at most `per_class` samples of each label (seeded), and the others."""
    if per_class is None:
        return list(samples), []
    by_label: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(samples):
        by_label.setdefault(label, []).append(i)
    rng = random.Random(seed)
    kept: set[int] = set()
    for members in by_label.values():
        kept.update(rng.sample(members, min(per_class, len(members))))
    return [s for i, s in enumerate(samples) if i in kept], [
        s for i, s in enumerate(samples) if i not in kept
    ]


def capped(samples: list, total: int | None, seed: int) -> list:
    """At most `total` samples, the same share of every class (seeded)."""
    if total is None or len(samples) <= total:
        return samples
    classes = len({label for _, label in samples})
    return stratified(samples, max(1, total // classes), seed)[0]


def load_splits(spec: FewShotSet, transform, root: Path, pool_per_class: int, max_test: int | None):
    """(support pool, test) EvalDatasets of one set, already capped."""
    from clipforge.evaluate.datasets import cifar, csv_dataset

    folder = root / spec.folder
    if spec.layout == "cifar":
        train, test = cifar(folder, "train", transform), cifar(folder, "test", transform)
    else:
        classes = [c.strip() for c in (folder / "classes.txt").read_text().splitlines() if c.strip()]
        test = csv_dataset(folder / "test.csv", transform, classes=classes, name=spec.name)
        if spec.pool_from_test:
            train = csv_dataset(folder / "test.csv", transform, classes=classes, name=spec.name)
            train.samples, test.samples = stratified(test.samples, spec.pool_from_test, seed=1)
        else:
            train = csv_dataset(folder / "train.csv", transform, classes=classes, name=spec.name)
    train.samples = stratified(train.samples, pool_per_class, seed=0)[0]
    test.samples = capped(test.samples, max_test, seed=0)
    return train, test


def extract_set(
    model,
    transform,
    spec: FewShotSet,
    root: Path = SHARED,
    pool_per_class: int = 50,
    max_test: int | None = 3000,
    cache_dir=True,
    progress: bool = True,
) -> dict:
    """Unit image embeddings of the support pool and the test images, the prompt-ensembled zero-shot head
    (E, C), the logit scale and the facts of the split (counts, classes, templates)."""
    from clipforge.evaluate.features import extract_features
    from clipforge.zeroshot.classifier import build_classifier
    from clipforge.zeroshot.templates import get_templates

    train, test = load_splits(spec, transform, root, pool_per_class, max_test)
    kwargs = dict(progress=progress, cache_dir=cache_dir)
    train_x, train_y = extract_features(model, train, "embedding", **kwargs)
    test_x, test_y = extract_features(model, test, "embedding", **kwargs)
    templates = get_templates(spec.templates)
    weights = build_classifier(model, list(test.classes), templates, **kwargs).float().cpu()
    return {
        "train_features": train_x, "train_labels": train_y, "test_features": test_x, "test_labels": test_y,
        "zeroshot_weights": weights, "logit_scale": float(model.logit_scale.detach().exp()),
        "classes": list(test.classes), "templates": spec.templates, "num_templates": len(templates),
        "support_pool": len(train_y), "test_images": len(test_y),
        "support_source": "test (held out)" if spec.pool_from_test else "train",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Write a features bundle: python -m benchmarks.fewshot_sets --checkpoint PATH --out FILE.pt [--sets ...]"""
    import argparse

    from clipforge.factory import load_model

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--max-test", type=int, default=3000)
    parser.add_argument("--pool-per-class", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, transform = load_model(args.checkpoint, device="cpu")
    bundle = {
        name: extract_set(model, transform, SETS[name], pool_per_class=args.pool_per_class,
                          max_test=args.max_test)
        for name in args.sets
    }  # fmt: skip
    bundle["checkpoint"] = str(args.checkpoint)
    torch.save(bundle, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
