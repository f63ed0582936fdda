"""The experiments on Flickr8k's human captions (`clipforge experiment ... --data flickr8k`).

Training: Flickr8k's official train split only (a `train_images` subset when asked), one of each image's
five captions per epoch (the library's `ImageCaptions` draw). The image tower is the locked ImageNet-1k
EfficientNet-Lite0 trunk of preset `lite0-small-text`, run once over `TRAIN_VIEWS` views of every image
(`recipes.frozen`): every objective then trains the same image projection plus its own language part of the
same size (contrastive: a 2-layer text transformer; bag-of-words: a linear word head; captioning: a 2-layer
caption decoder) on the same cached features, in the same order, for the same number of images. Evaluation is
zero-shot on label sets never seen in training: curves on `CURVE_SETS`' train splits (`val`, capped at
`val_images` per set, never a test split), final figures on their test splits (capped at `test_images`).
Cached views and evaluation subsets are drawn once (`DATA_SEED`), so runs of different seeds differ in their
initialisation, caption draw and batch order and are compared on the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from clipforge.recipes.flickr import CaptionedImages, load_flickr8k
from clipforge.recipes.unseen import SHARED, UNSEEN_SETS, load_set

CAPTION_MODEL = "lite0-small-text"  # the default --model for caption data
TRAIN_VIEWS = 2  # cached views per training image: the plain resize + one random resized crop/flip
SUPPORT_PER_CLASS = 20  # k-shot pools: this many train images per class (as benchmarks/fewshot_curve)
CURVE_TEMPLATES = ("a photo of a {}.",)
# the curves' sets: tiny-imagenet is left out (its 200 classes cost captioning 200 decoder passes per
# evaluation, and every objective sits within 2 points of its 0.5% chance there); its test split is reported
CURVE_SETS = ("imagenette", "flowers5", "cifar10")
DATA_SEED = 0  # cached views and evaluation subsets: the same for every seed (paired across seeds)


def is_caption_data(data: str) -> bool:
    """Whether `RunSettings.data` names Flickr8k (`flickr8k` or a folder of that name)."""
    return Path(data).name == "flickr8k"


def caption_folder(data: str) -> Path:
    return SHARED / "flickr8k" if data == "flickr8k" else Path(data)


@dataclass
class FeatureSet:
    """One labelled split as cached locked-trunk features (plain resized view)."""

    features: Tensor  # (N, D) float16
    labels: Tensor  # (N,)
    classes: list[str]


@dataclass
class CaptionSplits:
    train: CaptionedImages
    train_features: Tensor  # (N, TRAIN_VIEWS, D) float16
    val: dict[str, FeatureSet]  # unseen sets' train splits (capped): the curves
    support: dict[str, FeatureSet]  # SUPPORT_PER_CLASS train images per class: k-shot pools
    test: dict[str, FeatureSet]  # unseen sets' test splits (capped): the reported figures

    def prompt_texts(self) -> list[str]:
        """Every class name, bare and in CURVE_TEMPLATES (the word-vocabulary extras of bag-of-words and
        captioning: the texts they are asked to score)."""
        names = sorted({c for fs in self.test.values() for c in fs.classes})
        return names + [t.format(c) for c in names for t in CURVE_TEMPLATES]


def locked_model(settings):
    """The settings' preset with its pretrained EfficientNet-Lite0 trunk loaded and locked (init seeded)."""
    from clipforge.recipes.language import LanguageRecipe, build_model

    recipe = LanguageRecipe(name="experiment", model=settings.model, text_tower=None, lock_text=False,
                            seed=settings.seed)  # fmt: skip
    return build_model(recipe)


def _cached(path: Path, compute: Callable[[], Tensor]) -> Tensor:
    """Trunk features are a pure function of the images and the pretrained trunk: computed once per key."""
    if path.is_file():
        return torch.load(path, weights_only=True)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(value, path)
    return value


def _feature_set(model, settings, spec, split: str, cap: int | None, per_class: int | None = None):
    from clipforge.recipes.frozen import image_feature_cache, view_config

    data, names = load_set(spec, split, None)
    if per_class is not None:
        from clipforge.evaluate.fewshot import sample_shots

        index = sample_shots(data.labels, per_class, DATA_SEED)
    else:
        from clipforge.recipes.unseen import stratified_subset

        index = stratified_subset(data.labels, cap, DATA_SEED)
    tag = f"{spec.name}-{split}-{'pc' + str(per_class) if per_class else cap}-{settings.model}"
    path = Path(settings.cache_dir) / "features" / f"{tag}.pt"
    features = _cached(
        path,
        lambda: image_feature_cache(model, data.images[index], 1, view_config(model), progress=False)[:, 0],
    )
    return FeatureSet(features, data.labels[index], names)


def load_caption_splits(settings) -> CaptionSplits:
    """Flickr8k train (+ its cached trunk features) and the unseen sets' features; cached under
    `settings.cache_dir/features`."""
    from clipforge.recipes.experiments.runs import _random_subset
    from clipforge.recipes.frozen import image_feature_cache, view_config

    model = locked_model(settings)
    train = load_flickr8k(caption_folder(settings.data), "train", progress=settings.progress)
    if settings.train_images is not None:
        train = train.subset(_random_subset(len(train), settings.train_images, DATA_SEED).sort().values)
    tag = f"flickr8k-train-{len(train)}-v{TRAIN_VIEWS}-{settings.model}"
    train_features = _cached(
        Path(settings.cache_dir) / "features" / f"{tag}.pt",
        lambda: image_feature_cache(
            model, train.images, TRAIN_VIEWS, view_config(model), DATA_SEED, progress=settings.progress
        ),
    )
    val, support, test = {}, {}, {}
    for spec in tqdm(UNSEEN_SETS, desc="unseen-set features", disable=not settings.progress):
        test[spec.name] = _feature_set(model, settings, spec, "test", settings.test_images)
        if spec.name in CURVE_SETS:
            val[spec.name] = _feature_set(model, settings, spec, spec.validation_split, settings.val_images)
        if spec.validation_split is not None:
            support[spec.name] = _feature_set(
                model, settings, spec, spec.validation_split, None, SUPPORT_PER_CLASS
            )
    return CaptionSplits(train, train_features, val, support, test)


def mean_zeroshot(objective: nn.Module, sets: dict[str, FeatureSet], templates) -> dict[str, float]:
    """{set: top-1} and their mean ("mean") of `objective.class_scores` on cached features."""
    from clipforge.recipes.experiments.objectives import accuracy

    scores = {
        name: accuracy(objective, fs.features, fs.labels, fs.classes, list(templates))
        for name, fs in sets.items()
    }
    return {**scores, "mean": sum(scores.values()) / len(scores)}


def caption_run(name: str, settings, splits: CaptionSplits) -> tuple[nn.Module, Callable[[Path], dict]]:
    """(the untrained objective, train(folder) -> run record): one objective on the cached Flickr8k pairs."""
    from clipforge.data import EpochSampler
    from clipforge.recipes.experiments.objectives import make_objective
    from clipforge.recipes.frozen import CachedPairs
    from clipforge.tokenizer import tokenizer_for

    model = locked_model(settings)
    captions = splits.train.captioner(settings.seed, model.context_length, tokenizer_for(model))
    objective = make_objective(name, model, [], captions.texts, extra_vocabulary=splits.prompt_texts())

    def train(folder: Path) -> dict[str, Any]:
        sampler = EpochSampler(
            len(splits.train), settings.seed, batch_size=settings.batch_size, drop_last=True
        )
        loader = CachedPairs(splits.train_features, captions, sampler)
        return _fit_curve(name, settings, objective, loader, splits, folder)

    return objective, train


def _fit_curve(name, settings, objective, loader, splits: CaptionSplits, folder: Path) -> dict[str, Any]:
    import math

    from clipforge.recipes.experiments.runs import _train_config, run_record
    from clipforge.train import fit

    steps = max(1, round(settings.epochs * loader.batches_per_epoch))
    epochs = math.ceil(steps / loader.batches_per_epoch)
    per_set: list[dict[str, float]] = []

    def val_eval(_model: nn.Module) -> dict[str, float]:
        per_set.append(mean_zeroshot(objective, splits.val, CURVE_TEMPLATES))
        return {"zeroshot_top1": per_set[-1]["mean"]}

    curve = [{"images_seen": 0, "val_top1": val_eval(objective.model)["zeroshot_top1"]}]
    config = _train_config(settings, steps, epochs, folder / "train")
    config = replace(config, model=replace(config.model, lock_image=True, lock_text=False))
    trained = fit(config, model=objective.model, train_data=loader, objective=objective, zeroshot=val_eval)
    record = run_record(
        name, curve, trained, len(splits.train), sum(len(fs.labels) for fs in splits.val.values())
    )
    for point, scores in zip(record["curve"], per_set):
        point["val_per_set"] = {k: round(v, 4) for k, v in scores.items() if k != "mean"}
    return {
        **record,
        "vocabulary": len(objective.vocab) if hasattr(objective, "vocab") else None,
    }
