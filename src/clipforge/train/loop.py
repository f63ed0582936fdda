"""`fit`: the training loop. Any objective module with `loss(batch) -> {"loss": ...}` trains here."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clipforge.device import autocast_dtype, resolve_precision
from clipforge.models.resnet import ModifiedResNet
from clipforge.overrides import to_dict
from clipforge.results import markdown_table, write_results
from clipforge.train import distributed as D
from clipforge.train.config import TrainConfig
from clipforge.train.loader import IndexedLoader, TrainData, as_train_data
from clipforge.train.metrics import MetricsLogger, ZeroShotEval, plot_curves
from clipforge.train.objectives import ContrastiveObjective
from clipforge.train.optim import build_optimizer, keep_locked_in_eval, lock_towers
from clipforge.train.schedule import LRSchedule
from clipforge.train.state import CheckpointManager, capture_rng, load_state, restore_rng
from clipforge.train.step import accumulate_gradients

Callback = Callable[[str, dict[str, Any]], None]


def use_fast_layout(model: nn.Module, device: torch.device) -> None:
    """On CPU, a ResNet image tower trains in channels-last (NHWC) layout: oneDNN's convolutions and BatchNorm
    run a demo training step ~20% faster that way. Same values; checkpoints are saved contiguous."""
    visual = getattr(model, "visual", None)
    if isinstance(visual, ModifiedResNet) and torch.device(device).type == "cpu":
        visual.to(memory_format=torch.channels_last)


def build_model(config: TrainConfig) -> nn.Module:
    """The CLIP the config names: a preset, optionally with a shorter text context or another image size."""
    from clipforge.models import CLIP, get_config

    section = config.model
    model_config = get_config(section.name)
    if section.context_length is not None:
        model_config = dataclasses.replace(
            model_config, text=dataclasses.replace(model_config.text, context_length=section.context_length)
        )
    if section.image_size is not None:
        model_config = model_config.with_image_size(section.image_size)
    if section.pretrained is None:
        model = CLIP(model_config)
        load_pretrained_towers(model, section.image_tower, section.text_tower)
        return model
    if section.image_tower or section.text_tower:
        raise ValueError(
            "model.pretrained (a whole CLIP) cannot be combined with model.image_tower / text_tower"
        )
    if model_config != get_config(section.name):
        raise ValueError("model.pretrained cannot be combined with model.context_length or model.image_size")
    from clipforge.factory import create_model

    return create_model(section.name, pretrained=section.pretrained).train()


def load_pretrained_towers(model: nn.Module, image_tower: str | None, text_tower: str | None) -> None:
    """Pretrained unimodal weights into a fresh CLIP's timm image trunk / HF text encoder."""
    from clipforge.checkpoints.towers import load_image_tower, load_text_tower

    if image_tower:
        load_image_tower(model, image_tower)
    if text_tower:
        load_text_tower(model, text_tower)


def build_train_data(config: TrainConfig, model: nn.Module, info: D.DistInfo) -> TrainData:
    from clipforge.tokenizer import tokenizer_for
    from clipforge.train.datasets import CsvPairs, SyntheticPairs

    data = config.data
    tokenizer = tokenizer_for(model) if model.config.text.kind != "transformer" else None
    if data.kind == "synthetic":
        dataset = SyntheticPairs(
            data.num_samples,
            model.config.vision.image_size,
            model.context_length,
            data.num_classes,
            config.seed,
            tokenizer,
        )
    elif data.kind == "csv":
        from clipforge.transforms import image_transform

        dataset = CsvPairs(
            data.path,
            image_transform(model.config.preprocess),
            model.context_length,
            data.caption_template,
            tokenizer,
        )
    elif data.kind in ("labelled", "shards"):
        return array_loader(config, model, info)
    else:
        raise ValueError("data.kind=custom: pass train_data= to fit()")
    return IndexedLoader(
        dataset,
        data.batch_size,
        seed=config.seed,
        shuffle=data.shuffle,
        rank=info.rank,
        world_size=info.world_size,
        num_workers=data.num_workers,
    )


def array_loader(config: TrainConfig, model: nn.Module, info: D.DistInfo):
    """Decode-once in-memory loaders of clipforge.data: exact resume at any worker count, batched augmentation."""
    from clipforge.data import (
        ArrayLoader,
        AugmentConfig,
        EpochSampler,
        LabelledLoaderConfig,
        labelled_loader,
        open_caption_shards,
        open_labelled_dataset,
    )

    data, size = config.data, model.config.vision.image_size
    if data.path is None:
        raise ValueError(f"data.path is required for data.kind={data.kind}")
    augment = AugmentConfig(
        image_size=size, mean=model.config.preprocess.mean, std=model.config.preprocess.std
    )
    progress = info.is_main and config.log.progress
    tokenizer = None
    if model.config.text.kind != "transformer":  # an HF text tower brings its own tokenizer
        from clipforge.tokenizer import tokenizer_for

        tokenizer = tokenizer_for(model)
    if data.kind == "shards":
        arrays, captions = open_caption_shards(
            data.path, size, model.context_length, progress=progress, tokenizer=tokenizer
        )
        sampler = EpochSampler(
            len(arrays), config.seed, data.shuffle, info.rank, info.world_size, data.batch_size, True
        )
        return ArrayLoader(arrays, captions, sampler, augment)
    arrays = open_labelled_dataset(data.path, "train", image_size=size, progress=progress)
    loader_config = LabelledLoaderConfig(
        batch_size=data.batch_size, seed=config.seed, context_length=model.context_length, augment=augment,
        shuffle=data.shuffle, **({"templates": tuple(data.templates)} if data.templates else {}),
    )  # fmt: skip
    return labelled_loader(arrays, loader_config, info.rank, info.world_size, tokenizer)


def build_zeroshot_eval(config: TrainConfig, model: nn.Module) -> ZeroShotEval | None:
    if config.eval.zeroshot_data is None:
        return None
    from clipforge.train.datasets import load_labelled_csv
    from clipforge.transforms import image_transform

    images, labels, classnames = load_labelled_csv(
        config.eval.zeroshot_data, image_transform(model.config.preprocess), config.eval.max_images
    )
    return ZeroShotEval(images, labels, classnames, list(config.eval.templates), config.eval.batch_size)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def fit(
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    train_data: TrainData | None = None,
    objective: nn.Module | None = None,
    zeroshot: ZeroShotEval | None = None,
    callbacks: tuple[Callback, ...] = (),
) -> dict[str, Any]:
    """Train per `config`; returns the results dict (also written to output_dir/train.json on rank 0).

    model: default `build_model(config)`; train_data: default from config.data; see loader.TrainData (or a
    loader with set_position(epoch, offset) + __iter__, as clipforge.data's);
    objective: default ContrastiveObjective(model); zeroshot: default from config.eval.zeroshot_data.
    callbacks: called as cb(event, info) with event "step" (after each optimizer step) or "checkpoint"."""
    config.validate()
    info = D.init_distributed(config.device)
    try:
        return _Run(config, info, model, train_data, objective, zeroshot, callbacks).run()
    finally:
        D.shutdown_distributed(info)


class _Run:
    """State of one fit() call; methods are the loop's phases."""

    def __init__(self, config, info, model, train_data, objective, zeroshot, callbacks):
        self.config, self.info, self.callbacks = config, info, callbacks
        seed_everything(config.seed, config.deterministic)
        self.model = (model if model is not None else build_model(config)).to(info.device)
        use_fast_layout(self.model, info.device)
        D.broadcast_module(self.model)
        section = config.model
        lock_towers(
            self.model, section.lock_image, section.lock_text, section.lock_image_unlocked_groups,
            section.lock_text_unlocked_layers, section.lock_text_freeze_layer_norm,
        )  # fmt: skip
        if config.model.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        if train_data is None:
            train_data = build_train_data(config, self.model, info)
        self.objective = objective if objective is not None else self._default_objective(train_data)
        self.train_data = as_train_data(train_data, config.data.batch_size)
        self.zeroshot = zeroshot if zeroshot is not None else build_zeroshot_eval(config, self.model)
        self.precision = resolve_precision(config.precision, info.device)
        self.scaler = torch.amp.GradScaler(info.device.type) if self.precision == "fp16" else None
        self.params = [p for p in self.objective.parameters() if p.requires_grad]
        optim = config.optim
        self.optimizer = build_optimizer(self.objective, optim.lr, optim.weight_decay, optim.betas, optim.eps)
        self.steps_per_epoch = self.train_data.samples_per_epoch // config.data.batch_size
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.schedule = LRSchedule(
            self.optimizer, optim.schedule, optim.lr, optim.warmup_steps, self.total_steps, optim.min_lr
        )
        self.output_dir = Path(config.output_dir)
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", config.checkpoint.keep_last)
        self.logger = MetricsLogger(self.output_dir, info.is_main, config.log.jsonl, config.log.tensorboard)
        self.step, self.epoch, self.offset, self.best = 0, 0, 0, -math.inf
        self.last_checkpoint: Path | None = None
        self.evals: list[dict[str, float]] = []

    def _default_objective(self, train_data: Any) -> nn.Module:
        loss = self.config.loss
        if loss.objective != "contrastive":
            from clipforge.experiments.objectives import build_objective

            classes = getattr(getattr(train_data, "data", None), "classes", None)
            templates = getattr(getattr(train_data, "captioner", None), "templates", None)
            if not classes or not templates:
                raise ValueError(f"loss.objective={loss.objective} needs labelled data (data.kind=labelled)")
            return build_objective(loss.objective, self.model, classes, templates).to(self.info.device)
        return ContrastiveObjective(
            self.model,
            local_loss=loss.local_loss,
            gather_with_grad=loss.gather_with_grad,
            max_logit_scale=loss.max_logit_scale,
        ).to(self.info.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=dtype)

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Collective (every rank must call it): gathers each rank's RNG states."""
        rng = D.gather_objects(capture_rng())
        return {
            "model": self.model.state_dict(),
            "objective_extra": {
                k: v for k, v in self.objective.state_dict().items() if not k.startswith("model.")
            },
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "step": self.step,
            "epoch": self.epoch,
            "epoch_offset": self.offset,
            "world_size": self.info.world_size,
            "best": self.best,
            "config": to_dict(self.config),
            "model_config": self.model.config.to_dict() if hasattr(self.model, "config") else None,
        }

    def save(self, is_best: bool = False) -> None:
        state = self.state()
        if self.info.is_main:
            self.last_checkpoint = self.checkpoints.save(self.step, state, is_best)
            for callback in self.callbacks:
                callback("checkpoint", {"step": self.step, "path": self.last_checkpoint})
        self.saved_step = self.step

    def resume(self) -> None:
        target = self.config.checkpoint.resume
        if target is None:
            return
        if target == "auto":
            found = self.checkpoints.latest()
            if found is None:
                return  # nothing yet: a fresh start
            path, state = found
        else:
            path, state = Path(target), load_state(target)
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict({**self.objective.state_dict(), **state["objective_extra"]})
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if state["world_size"] != self.info.world_size and self.info.is_main:
            warnings.warn(
                f"{path}: saved with world size {state['world_size']}, resuming with {self.info.world_size}; "
                "the rest of this epoch is split differently (some samples may repeat or be skipped)",
                stacklevel=2,
            )
        rng = state["rng"]
        restore_rng(rng[self.info.rank] if len(rng) == self.info.world_size else rng[0])
        self.step, self.epoch, self.offset, self.best = (
            state["step"],
            state["epoch"],
            state["epoch_offset"],
            state["best"],
        )
        self.last_checkpoint = path
        if self.info.is_main:
            print(f"resumed from {path}: step {self.step}, epoch {self.epoch}, sample offset {self.offset}")

    # ---- the loop ----------------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        backward = (
            (lambda loss: self.scaler.scale(loss).backward())
            if self.scaler is not None
            else torch.Tensor.backward
        )
        metrics = accumulate_gradients(
            self.objective, batch, self.config.data.accum_steps, self._autocast, backward
        )
        D.average_gradients(self.params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.optim.grad_clip_norm is not None:
            metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                self.params, self.config.optim.grad_clip_norm
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.schedule.step()
        if hasattr(self.objective, "after_step"):
            self.objective.after_step()
        return metrics

    def run(self) -> dict[str, Any]:
        self.resume()
        self.saved_step = self.step
        start_step, start_time = self.step, time.perf_counter()
        self.model.train()
        keep_locked_in_eval(self.model, self.config.model.lock_image, self.config.model.lock_text)
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            disable=not (self.info.is_main and self.config.log.progress),
            dynamic_ncols=True,
        )
        window = _Window()
        while self.step < self.total_steps and self.epoch < self.config.epochs:
            self._run_epoch(progress, window)
        progress.close()
        wall_time_s = time.perf_counter() - start_time
        if self.zeroshot is not None and (not self.evals or self.evals[-1]["step"] != self.step):
            self.evaluate()
        if self.saved_step != self.step or self.last_checkpoint is None:
            self.save()
        return self.finish(wall_time_s, self.step - start_step)

    def _run_epoch(self, progress, window: _Window) -> None:
        batches = iter(self.train_data.batches(self.epoch, self.offset))
        device = self.info.device
        while self.step < self.total_steps:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:  # the data ran out before samples_per_epoch: count the epoch as done
                if self.offset:
                    warnings.warn(
                        f"epoch {self.epoch} ended after {self.offset} of {self.train_data.samples_per_epoch} "
                        "samples; check the loader's samples_per_epoch",
                        stacklevel=2,
                    )
                self.epoch, self.offset = self.epoch + 1, 0
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            window.data_wait_s += time.perf_counter() - wait_start
            metrics = self.train_step(batch)
            self.step += 1
            self.offset += len(batch["index"])
            window.add(metrics, len(batch["index"]) * self.info.world_size)
            if self.offset >= self.train_data.samples_per_epoch:
                self.epoch, self.offset = self.epoch + 1, 0
            progress.update(1)
            for callback in self.callbacks:
                callback(
                    "step", {"step": self.step, "epoch": self.epoch, "offset": self.offset, "batch": batch}
                )
            self._periodic(progress, window)
            if self.offset == 0:
                break  # the epoch is done (its iterator is exhausted too)

    def _periodic(self, progress, window: _Window) -> None:
        config = self.config
        if self.step % config.log.every_steps == 0 or self.step == self.total_steps:
            scalars = window.flush(self.schedule.last_lr, self.objective)
            self.logger.log(self.step, scalars)
            progress.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}")
        improved = False
        every = config.eval.zeroshot_every_steps
        if self.zeroshot is not None and every and self.step % every == 0:
            improved = self.evaluate()
        end_of_epoch = self.offset == 0 and config.checkpoint.every_steps == 0
        periodic = config.checkpoint.every_steps and self.step % config.checkpoint.every_steps == 0
        if improved or end_of_epoch or periodic:
            self.save(is_best=improved)

    def evaluate(self) -> bool:
        """Zero-shot accuracy on rank 0 (others wait); True when the best metric improved."""
        result = self.zeroshot(self.model) if self.info.is_main else {}
        keep_locked_in_eval(self.model, self.config.model.lock_image, self.config.model.lock_text)
        result = D.gather_objects(result)[0]
        self.evals.append({"step": self.step, "images_seen": self.images_seen, **result})
        self.logger.log(self.step, result, prefix="eval")
        value = result.get(self.config.checkpoint.best_metric)
        if value is not None and value > self.best:
            self.best = value
            return True
        return False

    @property
    def images_seen(self) -> int:
        return self.step * self.config.data.batch_size * self.info.world_size

    def finish(self, wall_time_s: float, steps_run: int) -> dict[str, Any]:
        last_loss = next((r["train/loss"] for r in reversed(self.logger.history) if "train/loss" in r), None)
        results = {
            "steps": self.step,
            "total_steps": self.total_steps,
            "images_seen": self.images_seen,
            "wall_time_s": wall_time_s,
            "samples_per_s": steps_run
            * self.config.data.batch_size
            * self.info.world_size
            / max(wall_time_s, 1e-9),
            "final_loss": last_loss,
            "zeroshot_top1": self.evals[-1].get("zeroshot_top1") if self.evals else None,
            "best": self.best if self.best > -math.inf else None,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "output_dir": str(self.output_dir),
            "world_size": self.info.world_size,
            "precision": self.precision,
            "evals": self.evals,
        }
        if self.info.is_main:
            if self.config.log.plot and self.logger.history:
                results["curve_png"] = str(
                    plot_curves(self.logger.history, self.output_dir / "train_curve.png")
                )
            rows = [{k: v for k, v in results.items() if k not in ("evals",)}]
            summary = "# Training\n\n" + markdown_table(rows) + "\n## Zero-shot during training\n\n"
            summary += markdown_table(self.evals)
            results["files"] = write_results(self.output_dir, "train", results, summary)
        self.logger.close()
        return results


class _Window:
    """Metrics between two log lines, kept as tensors so logging is the only host sync."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.steps, self.samples, self.data_wait_s = None, 0, 0, 0.0
        self.grad_norm = None
        self.start = time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor], samples: int) -> None:
        loss = metrics["loss"].detach()
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.grad_norm = metrics.get("grad_norm", self.grad_norm)
        self.steps += 1
        self.samples += samples

    def flush(self, lr: float, objective: nn.Module) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        scalars = {"loss": float(self.loss_sum) / max(self.steps, 1), "lr": lr}
        model = getattr(objective, "model", None)
        if model is not None and hasattr(model, "logit_scale"):
            scalars["logit_scale"] = float(model.logit_scale.detach().exp())
        if self.grad_norm is not None:
            scalars["grad_norm"] = float(self.grad_norm)
        scalars["samples_per_s"] = self.samples / max(elapsed, 1e-9)
        scalars["data_wait_s"] = self.data_wait_s
        self.reset()
        return scalars


__all__ = ["fit", "build_model", "build_train_data", "build_zeroshot_eval"]
