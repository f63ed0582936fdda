"""CLIP from Flickr8k's human captions, three ways, on one CPU budget; zero-shot on label sets never seen.

(a) `scratch`: the paper's method from scratch (ModifiedResNet + text transformer, both trained);
(b) `lit`: LiT, a locked pretrained EfficientNet-Lite0 + a text transformer trained from scratch;
(c) `pretrained`: both towers pretrained and locked (EfficientNet-Lite0, MiniLM-L6), only projections trained.
Locked towers run once (`recipes.frozen`): their cached features make an epoch of (c) take a fraction of a
second, so the budget buys many epochs instead of re-running frozen convolutions. Model selection uses 500
Flickr8k *train* images held out (`holdout_images`); the official val split and every test split are only
reported. `run_language(LanguageRecipe(...))` returns the results dict and writes the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from clipforge.recipes.flickr import CaptionedImages, hold_out, load_flickr8k
from clipforge.recipes.unseen import SHARED


@dataclass(frozen=True)
class LanguageRecipe:
    name: str = "pretrained"
    model: str = "lite0-minilm"  # a preset of clipforge.models.PRESETS
    image_tower: str | None = (
        "efficientnet-lite0"  # pretrained weights (clipforge.local_weights name or path)
    )
    text_tower: str | None = "all-MiniLM-L6-v2"
    lock_image: bool = True
    lock_text: bool = True
    image_size: int | None = None  # resolution fed to the image tower (default: the preset's)
    image_views: int = 1  # cached views per training image when the image tower is locked
    captions_per_image: int | None = None  # train on each image's first N captions only (None: all five);
    # with a locked text tower every caption is encoded once up front, so this bounds that cost
    epochs: float = (
        10.0  # held-out selection (docs/language.md): 10 epochs >= 30 >> 100 (memorising captions)
    )
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    init_logit_scale: float | None = None  # None: the preset's (log 1/0.07)
    holdout_images: int = 500  # of Flickr8k train: the model-selection split
    minutes: float | None = 15.0  # budget of the run (caches, steps, evaluation): fewer steps if it runs out
    # "wall": the guard counts wall-clock seconds; "cpu": process CPU seconds / (2 cores x 0.75 efficiency),
    # the quiet-host equivalent when the machine is shared (benchmarks/language.py uses it)
    budget_clock: Literal["wall", "cpu"] = "wall"
    data: str = str(SHARED / "flickr8k")
    output_dir: str = "runs/language"
    seed: int = 0
    progress: bool = True


RECIPES: dict[str, LanguageRecipe] = {
    "scratch": LanguageRecipe(
        name="scratch", model="flickr-resnet", image_tower=None, text_tower=None, lock_image=False,
        lock_text=False, epochs=40.0, batch_size=128, lr=1e-3, weight_decay=0.2, warmup_steps=100,
    ),
    "lit": LanguageRecipe(
        name="lit", model="lite0-scratch-text", text_tower=None, lock_text=False, epochs=20.0,
        batch_size=256, lr=5e-4, weight_decay=0.2, warmup_steps=50,
    ),
    # (c) chosen on selection data (docs/language.md, benchmarks/language_accuracy.py): MiniLM's own space
    # (no text projection), the trunk at its native 224 px, 3 cached views, all five captions
    "pretrained": LanguageRecipe(model="lite0-minilm-space", image_views=3),
}  # fmt: skip


def build_model(recipe: LanguageRecipe):
    """The preset (at `image_size`) with its pretrained towers loaded and locked as the recipe says."""
    from clipforge.models import CLIP, get_config
    from clipforge.train.loop import load_pretrained_towers
    from clipforge.train.optim import lock_towers

    config = get_config(recipe.model)
    if recipe.image_size is not None:
        config = config.with_image_size(recipe.image_size)
    if recipe.init_logit_scale is not None:
        config = replace(config, init_logit_scale=recipe.init_logit_scale)
    torch.manual_seed(recipe.seed)
    model = CLIP(config)
    load_pretrained_towers(model, recipe.image_tower, recipe.text_tower)
    lock_towers(model, recipe.lock_image, recipe.lock_text)
    return model


def training_data(
    model,
    recipe: LanguageRecipe,
    train: CaptionedImages,
    clock: BudgetClock | None = None,
    eval_images: int = 0,
):
    """The loader fit() trains on: `CachedPairs` over the locked image trunk's cached features (and the locked
    text tower's), or the library's `ArrayLoader` over augmented raw images when the image tower trains.
    With a `clock`, the extra cached views stop where the budget would no longer cover `eval_images`."""
    from clipforge.data import ArrayLoader, EpochSampler, LabelledArrays
    from clipforge.recipes.frozen import CachedPairs, text_feature_cache, view_config
    from clipforge.tokenizer import tokenizer_for

    augment = view_config(model)
    captions = train.captioner(recipe.seed, model.context_length, tokenizer_for(model))
    sampler = EpochSampler(len(train), recipe.seed, batch_size=recipe.batch_size, drop_last=True)
    if not recipe.lock_image:
        arrays = LabelledArrays(train.images, torch.full((len(train),), -1), [], "flickr8k")
        return ArrayLoader(arrays, captions, sampler, augment)
    text_features = None
    if recipe.lock_text:
        text_features = text_feature_cache(model, captions.token_table, progress=recipe.progress)
    images = cached_views(model, train.images, recipe, augment, clock, eval_images)
    return CachedPairs(images, captions, sampler, text_features)


def cached_views(model, images, recipe: LanguageRecipe, augment, clock: BudgetClock | None, eval_images: int):
    """(N, V, D) cached trunk features: view 0 (the plain image), then up to `recipe.image_views - 1` random
    crops, as many as leave 20% of the budget plus the evaluation of `eval_images` (at view 0's measured cost
    per image). The same (seed, view, image) keys as caching all views at once, so a shortened run is a prefix."""
    from clipforge.recipes.frozen import image_feature_cache

    start = clock.spent() if clock is not None else 0.0
    first = image_feature_cache(model, images, [0], augment, recipe.seed, progress=recipe.progress)
    extra = recipe.image_views - 1
    if extra > 0 and clock is not None and recipe.minutes is not None:
        per_view_s = max(clock.spent() - start, 1e-3)
        left_s = 0.8 * recipe.minutes * 60 - clock.spent() - 1.3 * eval_images * per_view_s / len(images)
        affordable = max(0, int(left_s / per_view_s))
        if affordable < extra:
            warnings.warn(
                f"LanguageRecipe.minutes={recipe.minutes}: caching {affordable} of {extra} extra image views "
                f"({per_view_s:.0f} s per view on this machine)",
                stacklevel=2,
            )
            extra = affordable
    if extra <= 0:
        return first
    views = range(1, 1 + extra)
    rest = image_feature_cache(model, images, list(views), augment, recipe.seed, progress=recipe.progress)
    return torch.cat([first, rest], dim=1)


def measure_step_s(model, loader, batch_size: int, clock: BudgetClock) -> float:
    """Budget seconds per optimizer step on a throwaway copy (the fastest of 3, after one warm-up)."""
    import copy

    from clipforge.recipes.frozen import CachedTowersObjective

    probe = copy.deepcopy(model).train()
    objective = CachedTowersObjective(probe)
    optimizer = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], lr=1e-9)
    batch = loader.make_batch(torch.arange(batch_size), 0)  # CachedPairs and ArrayLoader both build batches
    times = []
    for _ in range(4):
        start = clock.now()
        loss = objective.loss(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(clock.now() - start)
    return max(min(times[1:]), 1e-4)


CPU_SECONDS_PER_WALL_SECOND = (
    2 * 0.75
)  # 2 cores at 75% parallel efficiency (measured ratio, docs/language.md)


class BudgetClock:
    """Seconds spent since creation: wall clock, or process CPU time scaled to a quiet 2-core host."""

    def __init__(self, kind: str):
        self.kind = kind
        self.wall_start, self.cpu_start = time.perf_counter(), time.process_time()

    def now(self) -> float:
        return (
            time.perf_counter() if self.kind == "wall" else time.process_time() / CPU_SECONDS_PER_WALL_SECOND
        )

    def spent(self) -> float:
        if self.kind == "wall":
            return time.perf_counter() - self.wall_start
        return (time.process_time() - self.cpu_start) / CPU_SECONDS_PER_WALL_SECOND


def plan_steps(
    recipe: LanguageRecipe, per_epoch: int, spent_s: float, step_s: float, reserve_s: float = 0.0
) -> tuple[int, str]:
    """(steps, why): the recipe's epochs of `per_epoch` steps, or what the budget leaves after the caches and
    `reserve_s` (the evaluation still to come)."""
    wanted = max(1, round(recipe.epochs * per_epoch))
    if recipe.minutes is None:
        return wanted, "recipe"
    affordable = int(0.95 * (recipe.minutes * 60 - spent_s - reserve_s) / step_s)
    if affordable >= wanted:
        return wanted, "recipe"
    if affordable < 1:  # a slow or loaded machine: train one epoch anyway, and say so
        warnings.warn(
            f"LanguageRecipe.minutes={recipe.minutes}: the budget was spent before training started "
            f"({spent_s:.0f} s of caches); training 1 epoch, over budget",
            stacklevel=2,
        )
        return min(wanted, per_epoch), f"over budget ({recipe.minutes:g} min): 1 epoch"
    return affordable, f"budget ({recipe.minutes:g} min)"


def train_language(
    recipe: LanguageRecipe, train: CaptionedImages, eval_images: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Build, cache, train; returns (model, training facts). `eval_images`: images the caller will encode
    after training, reserved in the budget at the image tower's measured speed."""
    from clipforge.recipes.common import in_memory_run
    from clipforge.recipes.frozen import CachedTowersObjective
    from clipforge.train import fit

    clock, wall_start, cpu_start = BudgetClock(recipe.budget_clock), time.perf_counter(), time.process_time()
    model = build_model(recipe)
    loader = training_data(model, recipe, train, clock, eval_images)
    cache_s = clock.spent()
    step_s = measure_step_s(model, loader, recipe.batch_size, clock)
    image_s = measure_image_s(model, train, clock) if eval_images else 0.0
    reserve_s = eval_images * image_s * 1.3 + 10.0  # encoding the eval images, prompts and captions
    steps, why = plan_steps(recipe, loader.batches_per_epoch, clock.spent(), step_s, reserve_s)
    epochs = math.ceil(steps / loader.batches_per_epoch)
    config = in_memory_run(_RunSettings.of(recipe), steps, epochs, str(Path(recipe.output_dir) / "train"))
    config = replace(
        config, model=replace(config.model, lock_image=recipe.lock_image, lock_text=recipe.lock_text)
    )
    trained = fit(config, model=model, train_data=loader, objective=CachedTowersObjective(model))
    facts = {
        "steps": trained["steps"], "step_plan": why, "images_seen": trained["images_seen"],
        "epochs_seen": round(trained["images_seen"] / len(train), 2), "final_loss": trained["final_loss"],
        "budget_clock": recipe.budget_clock, "cache_s": round(cache_s, 1), "probe_step_s": round(step_s, 4),
        "train_wall_s": round(time.perf_counter() - wall_start, 1),
        "train_cpu_s": round(time.process_time() - cpu_start, 1), "train_budget_s": round(clock.spent(), 1),
        "train_images": len(train), "train_captions": len(train.flat_captions),
        "image_views": int(loader.image_features.shape[1]) if hasattr(loader, "image_features") else None,
    }  # fmt: skip
    return model.eval(), facts


@torch.no_grad()
def measure_image_s(model, train: CaptionedImages, clock: BudgetClock, count: int = 50) -> float:
    """Budget seconds to encode one image at eval (after a warm-up batch)."""
    from clipforge.recipes.unseen import encode_arrays

    encode_arrays(model, train.images[:10])
    start = clock.now()
    encode_arrays(model, train.images[:count])
    return (clock.now() - start) / count


@dataclass(frozen=True)
class _RunSettings:
    """What `clipforge.recipes.common.in_memory_run` reads of a recipe."""

    model: str
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    eval_points: int
    seed: int
    progress: bool

    @classmethod
    def of(cls, recipe: LanguageRecipe) -> _RunSettings:
        return cls(recipe.model, recipe.batch_size, recipe.lr, recipe.weight_decay, recipe.warmup_steps, 0,
                   recipe.seed, recipe.progress)  # fmt: skip


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_language(
    recipe: LanguageRecipe,
    templates: dict[str, list[str]] | None = None,
    max_images: int | None = None,
    train_limit: int | None = None,
) -> dict[str, Any]:
    """Train one recipe, then report: held-out Flickr8k-train retrieval (selection), zero-shot on the unseen
    sets (test splits, bootstrap intervals) and Flickr8k val retrieval. Writes the clipforge checkpoint."""
    from clipforge.checkpoints.io import save_checkpoint
    from clipforge.recipes.prompts import DEFAULT_PROMPTS
    from clipforge.recipes.unseen import eval_image_count, evaluate_unseen, held_out_retrieval

    data = load_flickr8k(recipe.data, "train")
    if train_limit is not None and train_limit < len(data):  # a seeded subset (smoke runs)
        data = data.subset(
            torch.randperm(len(data), generator=torch.Generator().manual_seed(recipe.seed))[:train_limit]
            .sort()
            .values
        )
    train, held = hold_out(data, recipe.holdout_images, recipe.seed)
    if recipe.captions_per_image is not None:
        train = train.first_captions(recipe.captions_per_image)
    model, facts = train_language(recipe, train, eval_image_count(max_images) + len(held))
    eval_start = time.perf_counter()
    results: dict[str, Any] = {"recipe": recipe.name, **facts}
    results["holdout_retrieval"] = held_out_retrieval(model, held)
    results.update(evaluate_unseen(model, templates or DEFAULT_PROMPTS, max_images))
    results["eval_wall_s"] = round(time.perf_counter() - eval_start, 1)
    out = Path(recipe.output_dir)
    checkpoint = save_checkpoint(
        out / f"{recipe.name}.safetensors", model, extra={"recipe": dataclasses.asdict(recipe)}
    )
    results.update(
        checkpoint=str(checkpoint), peak_rss_mb=round(peak_rss_mb(), 1), config=dataclasses.asdict(recipe)
    )
    return results
