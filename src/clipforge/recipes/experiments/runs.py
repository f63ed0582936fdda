"""One training run per objective: same image encoder, same data order, same images seen; cached on disk.

`train_objective(name, settings)` trains with `clipforge.train.fit` on template captions of a labelled set
(the CIFAR-10 demo's recipe), records validation accuracy against images seen (validation = training images
held out by a seeded permutation, never the test split) and keeps the weights in `settings.cache_dir`, keyed
by the settings, so a later experiment reuses the run instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clipforge.data import (
    DEFAULT_TEMPLATES,
    LabelledArrays,
    LabelledTensors,
    open_labelled_dataset,
    seeded_split,
    to_eval_tensors,
)

TRAIN_TEMPLATES = DEFAULT_TEMPLATES  # the captions every objective trains on
CURVE_TEMPLATES = ("a photo of a {}.",)  # validation curves: one prompt (captioning scores cost per prompt)


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides a training run (its cache key)."""

    data: str = "../shared/data/cifar10"  # train + test splits, any layout open_labelled_dataset reads
    model: str = "demo-cifar"  # image encoder (and text tower / decoder size) from clipforge.models.PRESETS
    train_images: int | None = None  # a seeded random N of the training images (None: all)
    val_images: int = 500  # held out of the training images for the curves
    test_images: int | None = None  # a seeded random N of the test images (None: all)
    epochs: float = 6.0
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    eval_points: int = 6
    seed: int = 0
    cache_dir: str = "runs/experiments"
    progress: bool = True

    def key(self, objective: str) -> str:
        fields = {k: v for k, v in asdict(self).items() if k not in ("cache_dir", "progress", "test_images")}
        digest = hashlib.sha256(json.dumps([objective, fields], sort_keys=True).encode()).hexdigest()[:12]
        return f"{objective}-{digest}"


SMOKE = dict(train_images=320, val_images=64, test_images=100, epochs=1.0, batch_size=64, warmup_steps=2,
             eval_points=2)  # fmt: skip


def smoke_settings(settings: RunSettings) -> RunSettings:
    return replace(settings, **SMOKE)


@dataclass
class Splits:
    train: LabelledArrays
    val: LabelledTensors
    test: LabelledTensors
    test_arrays: LabelledArrays  # uint8, for shifted copies


def load_splits(settings: RunSettings, image_size: int) -> Splits:
    """(train arrays, validation tensors, test tensors); validation is a seeded subset of the train split."""
    kwargs = dict(progress=settings.progress, num_workers=1)
    train = open_labelled_dataset(settings.data, "train", **kwargs)
    test = open_labelled_dataset(settings.data, "test", **kwargs)
    if settings.train_images is not None:  # files are often sorted by class: a seeded random subset
        train = train.subset(_random_subset(len(train), settings.train_images, settings.seed))
    if not 0 < settings.val_images < len(train):
        raise ValueError(f"RunSettings.val_images={settings.val_images}: must be in (0, {len(train)})")
    keep, held = seeded_split(len(train), settings.val_images, settings.seed)
    if settings.test_images is not None:
        test = test.subset(_random_subset(len(test), settings.test_images, settings.seed))
    return Splits(
        train.subset(keep),
        to_eval_tensors(train.subset(held), image_size),
        to_eval_tensors(test, image_size),
        test,
    )


def _random_subset(total: int, count: int, seed: int) -> torch.Tensor:
    return seeded_split(total, min(count, total), seed + 1)[1]


def _train_config(settings: RunSettings, total_steps: int, epochs: int, output_dir: Path):
    from clipforge.recipes.common import in_memory_run

    # at least one zero-shot point (the curve); weights are cached by the experiment, so no mid-run checkpoints
    recipe = replace(settings, eval_points=max(settings.eval_points, 1))
    return in_memory_run(recipe, total_steps, epochs, str(output_dir), checkpoint_every_steps=10**9)


def new_objective(name: str, settings: RunSettings, classes: list[str]) -> nn.Module:
    from clipforge.models import CLIP, get_config
    from clipforge.recipes.experiments.objectives import make_objective, template_captions

    torch.manual_seed(settings.seed)
    model = CLIP(get_config(settings.model))
    return make_objective(name, model, classes, template_captions(classes, TRAIN_TEMPLATES))


def train_objective(name: str, settings: RunSettings, splits=None) -> tuple[nn.Module, dict]:
    """(trained objective in eval mode, run record {"curve": [{images_seen, val_top1}], ...}); cached.
    `splits`: `load_experiment_splits(settings)` (loaded here when None)."""
    from clipforge.recipes.experiments.captions import caption_run

    folder = Path(settings.cache_dir) / settings.key(name)
    splits = splits or load_experiment_splits(settings)
    if isinstance(splits, Splits):
        objective, train = _labelled_run(name, settings, splits)
    else:
        objective, train = caption_run(name, settings, splits)
    if (folder / "run.json").exists():
        objective.load_state_dict(torch.load(folder / "objective.pt", weights_only=True))
        return objective.eval(), json.loads((folder / "run.json").read_text())
    record = {**train(folder), "settings": asdict(settings)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(objective.state_dict(), folder / "objective.pt")
    (folder / "run.json").write_text(json.dumps(record, indent=1))
    return objective.eval(), record


def load_experiment_splits(settings: RunSettings):
    """`Splits` of a labelled set, or `captions.CaptionSplits` when `settings.data` is Flickr8k."""
    from clipforge.recipes.experiments.captions import is_caption_data, load_caption_splits

    if is_caption_data(settings.data):
        return load_caption_splits(settings)
    return load_splits(settings, _image_size(settings))


def reported_sets(splits) -> dict[str, tuple[Tensor, Tensor, list[str]]]:
    """{name: (inputs, labels, class names)} of the reported test sets: the labelled set's test split, or
    every unseen set's test split (cached trunk features) for caption data."""
    if isinstance(splits, Splits):
        return {"test": (splits.test.images, splits.test.labels, list(splits.train.classes))}
    return {name: (fs.features, fs.labels, fs.classes) for name, fs in splits.test.items()}


def eval_templates(splits) -> tuple[str, ...]:
    """Prompts of the objectives' zero-shot scores: the 12 training templates for template-caption runs, the
    curves' one prompt for caption data (captioning scores cost one decoder pass per prompt and class)."""
    from clipforge.recipes.experiments.captions import CURVE_TEMPLATES

    return TRAIN_TEMPLATES if isinstance(splits, Splits) else CURVE_TEMPLATES


def chance(splits) -> float:
    """Chance top-1 of the curves' metric (for caption data: the mean over the validation sets)."""
    if isinstance(splits, Splits):
        return 1 / len(splits.train.classes)
    return sum(1 / len(fs.classes) for fs in splits.val.values()) / len(splits.val)


def run_record(name: str, curve: list[dict], trained: dict, train_images: int, val_images: int) -> dict:
    """A run's record: `curve` (the point before training) + fit()'s evaluations, and fit()'s facts."""
    curve = curve + [
        {"images_seen": e["images_seen"], "val_top1": e["zeroshot_top1"]} for e in trained["evals"]
    ]
    return {
        "objective": name,
        "curve": curve,
        "images_seen": trained["images_seen"],
        "steps": trained["steps"],
        "train_wall_time_s": round(trained["wall_time_s"], 1),
        "final_loss": trained["final_loss"],
        "train_images": train_images,
        "val_images": val_images,
    }


def _labelled_run(name: str, settings: RunSettings, splits: Splits):
    """(untrained objective, train(folder) -> record) on template captions of a labelled set."""
    from clipforge.data.loader import LabelledLoaderConfig, labelled_loader
    from clipforge.recipes.experiments.objectives import accuracy
    from clipforge.train import fit

    classes = list(splits.train.classes)
    objective = new_objective(name, settings, classes)

    def train(folder: Path) -> dict[str, Any]:
        loader = labelled_loader(
            splits.train,
            LabelledLoaderConfig(
                batch_size=settings.batch_size, seed=settings.seed,
                context_length=objective.model.context_length, templates=TRAIN_TEMPLATES,
            ),
        )  # fmt: skip
        samples_per_epoch = loader.batches_per_epoch * settings.batch_size
        steps = max(1, round(settings.epochs * samples_per_epoch / settings.batch_size))
        epochs = math.ceil(steps * settings.batch_size / samples_per_epoch)

        def val_eval(_model: nn.Module) -> dict[str, float]:
            top1 = accuracy(objective, splits.val.images, splits.val.labels, classes, TRAIN_TEMPLATES)
            return {"zeroshot_top1": top1}

        curve = [{"images_seen": 0, "val_top1": val_eval(objective.model)["zeroshot_top1"]}]
        trained = fit(
            _train_config(settings, steps, epochs, folder / "train"), model=objective.model,
            train_data=loader, objective=objective, zeroshot=val_eval,
        )  # fmt: skip
        return run_record(name, curve, trained, len(splits.train), len(splits.val.labels))

    return objective, train


def _image_size(settings: RunSettings) -> int:
    from clipforge.models import get_config

    return get_config(settings.model).vision.image_size
