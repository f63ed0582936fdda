"""The CIFAR-10 demo: a small CLIP trained from scratch on 2 CPU cores, then zero-shot, probe and retrieval.

`run_demo(DemoConfig())` decodes the 50,000 training images once into memory (cached on disk), trains the
`demo-cifar` preset with `clipforge.train.fit` on template captions ("a blurry photo of a cat."), and reports
on the 1,000 test images: zero-shot top-1 (prompt-ensembled class embeddings), a linear probe on image
features, and text->image retrieval (class prompt -> images of that class). The learning rate schedule is
fitted to a wall-clock budget (`minutes`) from a throughput probe, so a slow machine trains fewer steps
instead of overrunning.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clipforge.data import (
    DEFAULT_TEMPLATES,
    LabelledArrays,
    open_labelled_dataset,
    seeded_split,
    to_eval_tensors,
)
from clipforge.data.loader import LabelledLoaderConfig, labelled_loader
from clipforge.evaluate.linear_probe import ProbeConfig
from clipforge.figures import pyplot, save_figure
from clipforge.models import CLIP, get_config
from clipforge.train.metrics import ZeroShotEval
from clipforge.train.objectives import ContrastiveObjective
from clipforge.zeroshot.classifier import build_classifier


@dataclass(frozen=True)
class DemoConfig:
    """Every knob of the demo (defaults: the recipe of docs/demo.md)."""

    data: str = "../shared/data/cifar10-wds"  # any layout `open_labelled_dataset` reads (train split)
    test_data: str | None = "../shared/data/cifar10"  # test split; None: the `data` path's test split
    output_dir: str = "runs/demo"
    model: str = "demo-cifar"  # a preset of clipforge.models.PRESETS
    epochs: float = 3.0  # passes over the training images (fewer if `minutes` runs out first)
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    minutes: float | None = 15.0  # wall-clock budget of the whole run, data loading and evaluation included
    val_images: int = 1000  # held out of the training images for the learning curve
    eval_points: int = 8  # validation zero-shot evaluations during training (the curve)
    probe_images: int = 2000  # training images for the linear probe
    train_limit: int | None = None  # use only N training images, a seeded random subset (smoke runs)
    threads: int = 2
    seed: int = 0
    cache_dir: str | None = None  # decoded-image cache (default ~/.cache/clipforge/images)
    progress: bool = True


SMOKE_OVERRIDES = dict(
    epochs=2.0, batch_size=64, lr=3e-3, warmup_steps=5, minutes=None, val_images=256, eval_points=2,
    probe_images=1024, train_limit=2304,
)  # fmt: skip


def smoke_config(config: DemoConfig) -> DemoConfig:
    """The same pipeline end to end in seconds: a few thousand images, a couple of epochs."""
    return replace(config, **SMOKE_OVERRIDES)


# A coarse lambda grid (1e-3 .. 1e3, decade steps) and capped L-BFGS: ~6 fits instead of ~15 x 1000 iterations.
PROBE = ProbeConfig(max_iter=50, steps_per_decade=1, log10_min=-3, log10_max=3)


def split_validation(data: LabelledArrays, count: int, seed: int) -> tuple[LabelledArrays, LabelledArrays]:
    """(train, val): `count` images chosen by a seeded permutation are held out for the learning curve."""
    if not 0 <= count < len(data):
        raise ValueError(f"DemoConfig.val_images={count}: must be in [0, {len(data)}) for {data.source}")
    keep, held = seeded_split(len(data), count, seed)
    return data.subset(keep), data.subset(held)


def load_data(config: DemoConfig) -> tuple[LabelledArrays, LabelledArrays]:
    """(train, test) as uint8 arrays; both must name the same classes in the same order."""
    from clipforge.data import detect_layout

    kwargs = dict(cache_dir=config.cache_dir, progress=config.progress)
    test_path = config.test_data or config.data
    test_layout = detect_layout(test_path, "test")
    if test_layout[0] != "cifar" and test_layout == detect_layout(config.data, "train"):  # pickles hold both
        raise ValueError(
            f"DemoConfig.test_data: {test_path} has no separate test split (its 'test' would be the training "
            "images); pass --test-data, e.g. ../shared/data/cifar10 or cifar-10-python.tar.gz"
        )
    train = open_labelled_dataset(config.data, "train", **kwargs)
    test = open_labelled_dataset(test_path, "test", **kwargs)
    if train.classes != test.classes:
        raise ValueError(
            f"class names differ: train ({train.source}) {train.classes} vs test ({test.source}) {test.classes}"
        )
    if config.train_limit is not None and config.train_limit < len(train):
        # a seeded random subset: class-sorted layouts (ImageFolder, train.csv) keep every class
        train = train.subset(seeded_split(len(train), config.train_limit, config.seed)[1])
    return train, test


def measure_step_s(model: CLIP, loader, batch_size: int, steps: int = 3) -> float:
    """Seconds per training step (batch, forward, backward, AdamW) on a throwaway copy of `model`."""
    probe = copy.deepcopy(model).train()
    objective = ContrastiveObjective(probe, dedup_text=True)  # template captions repeat
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-9)
    index = torch.arange(min(batch_size, len(loader.data)))
    times = []
    for _ in range(steps + 1):  # the first step pays one-off kernel setup
        start = time.perf_counter()
        loss = objective.loss(loader.make_batch(index, 0))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])  # the least disturbed by other processes


def plan_steps(config: DemoConfig, samples_per_epoch: int, elapsed_s: float, step_s: float, eval_s: float):
    """(steps, why): the recipe's steps, or fewer when the wall-clock budget would run out first."""
    recipe = max(1, round(config.epochs * samples_per_epoch / config.batch_size))
    if config.minutes is None:
        return recipe, "recipe"
    # after training: test zero-shot, probe features (~probe/val evals), probe fit and checkpoint (~40 s)
    final_s = eval_s * (1 + config.probe_images / max(config.val_images, 1)) + 40.0
    epochs_s = 2.0 * math.ceil(config.epochs)  # a training-state checkpoint at the end of each epoch
    left_s = config.minutes * 60 - elapsed_s - final_s - epochs_s - config.eval_points * eval_s
    affordable = int(0.97 * left_s / step_s)
    if affordable >= recipe:
        return recipe, "recipe"
    if affordable < 1:
        raise RuntimeError(
            f"DemoConfig.minutes={config.minutes}: {elapsed_s:.0f} s already spent and a step takes "
            f"{step_s:.1f} s; nothing left to train (raise minutes or set it to null)"
        )
    return affordable, f"budget ({config.minutes:g} min)"


def train_config(config: DemoConfig, total_steps: int, epochs: int):
    from clipforge.recipes.common import in_memory_run

    return in_memory_run(
        config, total_steps, epochs, str(Path(config.output_dir) / "train"), DEFAULT_TEMPLATES
    )


@torch.no_grad()
def image_features(model: CLIP, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """(pre-projection features (N, D) for the linear probe, unit embeddings (N, E)); eval mode."""
    model.eval()
    trunk, embedded = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        features = model.visual.features(chunk)  # (b, D)
        trunk.append(features)
        embedded.append(F.normalize(model.encode_image(chunk), dim=-1))
    return torch.cat(trunk), torch.cat(embedded)


def retrieval_metrics(class_text: Tensor, test_embeddings: Tensor, labels: Tensor) -> dict[str, float]:
    """Text -> image: each class prompt ranks the test images; precision@k (k = images per class) and mAP."""
    scores = (test_embeddings @ class_text).T  # (C, N)
    ranked = scores.argsort(dim=1, descending=True)  # (C, N)
    hits = (labels[ranked] == torch.arange(len(scores))[:, None]).float()  # (C, N) relevance in rank order
    per_class = hits.sum(dim=1)  # (C,) relevant images per class
    k = int(per_class.min())
    precision_at_k = hits[:, :k].mean(dim=1)
    cumulative = hits.cumsum(dim=1) / torch.arange(1, hits.shape[1] + 1)
    average_precision = (cumulative * hits).sum(dim=1) / per_class.clamp(min=1)
    return {
        f"retrieval_precision@{k}": float(precision_at_k.mean()),
        "retrieval_map": float(average_precision.mean()),
    }


def final_evaluation(model: CLIP, train: LabelledArrays, test: LabelledArrays, config: DemoConfig) -> dict:
    """Test-split zero-shot top-1, linear probe (train features -> test) and text->image retrieval."""
    from clipforge.evaluate.linear_probe import linear_probe

    size = model.config.vision.image_size
    test_tensors = to_eval_tensors(test, size)
    probe_count = min(config.probe_images, len(train))
    probe_train = to_eval_tensors(
        LabelledArrays(train.images[:probe_count], train.labels[:probe_count], train.classes), size
    )
    zeroshot = ZeroShotEval(test_tensors.images, test_tensors.labels, test.classes, list(DEFAULT_TEMPLATES))
    results = dict(zeroshot(model))
    with torch.no_grad():
        model.eval()
        class_text = build_classifier(
            model, test.classes, list(DEFAULT_TEMPLATES), cache_dir=False, progress=False
        ).float()  # (E, C)
    test_trunk, test_embedded = image_features(model, test_tensors.images)
    train_trunk, _ = image_features(model, probe_train.images)
    probe = linear_probe(
        train_trunk, probe_train.labels, test_trunk, test_tensors.labels, PROBE,
        progress=config.progress,
    )  # fmt: skip
    results["linear_probe_top1"] = float(probe["acc1"])
    results["linear_probe_lambda"] = float(probe["lambda"])
    results.update(retrieval_metrics(class_text, test_embedded, test_tensors.labels))
    return results


def plot_curve(curve: list[dict], test_top1: float, path: Path) -> Path:
    """Images seen vs validation zero-shot top-1 (the final test number as a star)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [p["images_seen"] for p in curve], [p["val_zeroshot_top1"] for p in curve], marker="o", label="val"
    )
    ax.plot([curve[-1]["images_seen"]], [test_top1], marker="*", markersize=12, linestyle="", label="test")
    ax.axhline(0.1, color="grey", linestyle=":", label="chance")
    ax.set(
        xlabel="images seen", ylabel="zero-shot top-1", title="clipforge demo: CLIP from scratch on CIFAR-10"
    )
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def summary_markdown(results: dict[str, Any]) -> str:
    from clipforge.results import markdown_table

    keys = [
        "zeroshot_top1", "linear_probe_top1", "retrieval_map", "images_seen", "epochs_seen", "steps",
        "wall_time_s", "train_wall_time_s", "samples_per_s", "step_plan",
    ]  # fmt: skip
    head = [{k: results.get(k) for k in keys}]
    return (
        "# CLIP from scratch on CIFAR-10 (clipforge demo)\n\n"
        + markdown_table(head)
        + "\n## Learning curve (validation = held-out training images)\n\n"
        + markdown_table(results["curve"])
        + f"\ncheckpoint: `{results['checkpoint']}`\n"
    )


def run_demo(config: DemoConfig = DemoConfig()) -> dict[str, Any]:
    """Train, evaluate, save; returns the results dict (also written to output_dir/demo.json)."""
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run(config, start)
    finally:
        torch.set_num_threads(threads)


def _train(config: DemoConfig, model: CLIP, train: LabelledArrays, val: LabelledArrays, start: float) -> dict:
    """Fit `model` on `train` within the budget; the trainer's results plus the curve, plan and probe step time."""
    from clipforge.train import fit

    loader = labelled_loader(
        train,
        LabelledLoaderConfig(
            batch_size=config.batch_size, seed=config.seed, context_length=model.context_length,
            templates=DEFAULT_TEMPLATES,
        ),
    )  # fmt: skip
    val_tensors = to_eval_tensors(val, model.config.vision.image_size)
    val_eval = ZeroShotEval(val_tensors.images, val_tensors.labels, val.classes, list(DEFAULT_TEMPLATES))
    eval_start = time.perf_counter()
    curve = [{"images_seen": 0, "val_zeroshot_top1": val_eval(model)["zeroshot_top1"], "time_s": 0.0}]
    eval_s = time.perf_counter() - eval_start
    step_s = measure_step_s(model, loader, config.batch_size)
    samples_per_epoch = loader.batches_per_epoch * config.batch_size
    steps, why = plan_steps(config, samples_per_epoch, time.perf_counter() - start, step_s, eval_s)
    epochs = math.ceil(steps * config.batch_size / samples_per_epoch)
    train_start = time.perf_counter()
    step_times: dict[int, float] = {}

    def note_time(event: str, info: dict) -> None:
        if event == "step":
            step_times[info["step"]] = time.perf_counter() - train_start

    trained = fit(
        train_config(config, steps, epochs), model=model, train_data=loader,
        objective=ContrastiveObjective(model, dedup_text=True), zeroshot=val_eval, callbacks=(note_time,),
    )  # fmt: skip
    curve += [
        {"images_seen": e["images_seen"], "val_zeroshot_top1": e["zeroshot_top1"], "time_s": step_times.get(e["step"])}
        for e in trained["evals"]
    ]  # fmt: skip
    return {**trained, "curve": curve, "step_plan": why, "probe_step_s": step_s}


def _run(config: DemoConfig, start: float) -> dict[str, Any]:
    from clipforge.checkpoints.io import save_checkpoint
    from clipforge.results import write_results

    out = Path(config.output_dir)
    all_train, test = load_data(config)
    train, val = split_validation(all_train, config.val_images, config.seed)
    torch.manual_seed(config.seed)
    model = CLIP(get_config(config.model))
    trained = _train(config, model, train, val, start)
    results: dict[str, Any] = final_evaluation(model, all_train, test, config)
    checkpoint = save_checkpoint(
        out / f"{config.model}.safetensors", model,
        extra={"classes": test.classes, "templates": list(DEFAULT_TEMPLATES), "source": "clipforge demo"},
    )  # fmt: skip
    results.update(
        images_seen=trained["images_seen"],
        epochs_seen=round(trained["images_seen"] / len(train), 3),
        steps=trained["steps"],
        step_plan=trained["step_plan"],
        probe_step_s=round(trained["probe_step_s"], 3),
        train_wall_time_s=round(trained["wall_time_s"], 1),
        samples_per_s=round(trained["samples_per_s"], 1),
        final_loss=trained["final_loss"],
        checkpoint=str(checkpoint),
        train_state=trained["checkpoint"],
        curve=trained["curve"],
        train_images=len(train), val_images=len(val), test_images=len(test),
        data=train.source, test_data=test.source,
        model=config.model, parameters=model.num_parameters(), threads=config.threads,
        config=dataclass_dict(config),
    )  # fmt: skip
    results["curve_png"] = str(plot_curve(results["curve"], results["zeroshot_top1"], out / "demo_curve.png"))
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    results["files"] = write_results(out, "demo", results, summary_markdown(results))
    return results


def dataclass_dict(config: DemoConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)
