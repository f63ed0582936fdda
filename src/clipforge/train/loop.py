"""`fit`: the training loop. It consumes one loader protocol (clipforge.data.protocol) and trains an objective
looked up in the registry (clipforge.train.objectives); any module with `loss(batch) -> {"loss": ...}` trains."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from clipforge.data.protocol import TrainData, check_train_data
from clipforge.device import autocast_dtype, resolve_precision
from clipforge.models.resnet import ModifiedResNet
from clipforge.overrides import to_dict
from clipforge.results import markdown_table, write_results
from clipforge.train import distributed as D
from clipforge.train import sigmoid as _sigmoid  # noqa: F401 (registers loss.objective=sigmoid)
from clipforge.train.config import TrainConfig
from clipforge.train.data import build_train_data, build_zeroshot_eval
from clipforge.train.ema import WeightEMA
from clipforge.train.metrics import MetricsLogger, ZeroShotEval, plot_curves
from clipforge.train.objectives import build_objective
from clipforge.train.optim import build_optimizer, keep_locked_in_eval, lock_towers
from clipforge.train.reducer import GradientReducer
from clipforge.train.schedule import LRSchedule
from clipforge.train.seeding import global_state_restored, seed_everything
from clipforge.train.speed import compile_towers, to_device
from clipforge.train.state import CheckpointManager, capture_rng, load_state, restore_rng
from clipforge.train.step import accumulate_gradients

Callback = Callable[[str, dict[str, Any]], None]


def use_fast_layout(model: nn.Module, device: torch.device) -> None:
    """A ResNet image tower trains in channels-last (NHWC) layout: on CPU oneDNN's convolutions and BatchNorm
    run a demo training step ~20% faster that way, on GPUs cuDNN's tensor-core kernels want it. Same values;
    checkpoints are saved contiguous."""
    visual = getattr(model, "visual", None)
    if isinstance(visual, ModifiedResNet) and torch.device(device).type in ("cpu", "cuda"):
        visual.to(memory_format=torch.channels_last)


def set_patch_dropout(model: nn.Module, patch_dropout: float) -> None:
    """FLIP patch dropout on a ViT image tower (training mode only; eval always sees every patch)."""
    visual = getattr(model, "visual", None)
    if patch_dropout and not hasattr(visual, "patch_dropout"):
        raise ValueError(
            f"model.patch_dropout={patch_dropout} needs a ViT image tower, not {type(visual).__name__}"
        )
    if visual is not None and hasattr(visual, "patch_dropout"):
        visual.patch_dropout = patch_dropout


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

    model: default `build_model(config)`; train_data: a loader of the one protocol (clipforge.data.protocol),
    default from config.data; objective: default the registered `config.loss.objective` around the model;
    zeroshot: default from config.eval.zeroshot_data. callbacks: called as cb(event, info) with event "step"
    (after each optimizer step) or "checkpoint". The process's RNG states and deterministic-mode flags are
    restored on return."""
    config.validate()
    info = D.init_distributed(config.device)
    try:
        with global_state_restored():
            return _Run(config, info, model, train_data, objective, zeroshot, callbacks).run()
    finally:
        D.shutdown_distributed(info)


class _Run:
    """State of one fit() call; methods are the loop's phases."""

    def __init__(self, config, info, model, train_data, objective, zeroshot, callbacks):
        self.config, self.info, self.callbacks = config, info, callbacks
        seed_everything(config.seed, config.deterministic, info.device)
        self._setup_model(model)
        data = train_data if train_data is not None else build_train_data(config, self.model, info)
        self.train_data = check_train_data(data)
        if self.train_data.batch_size != config.data.batch_size:
            raise ValueError(
                f"train_data yields batches of {self.train_data.batch_size} but data.batch_size="
                f"{config.data.batch_size}; set data.batch_size to the loader's"
            )
        self.objective = objective if objective is not None else self._default_objective()
        self.zeroshot = zeroshot if zeroshot is not None else build_zeroshot_eval(config, self.model)
        self._setup_optimization()
        self.output_dir = Path(config.output_dir)
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", config.checkpoint.keep_last)
        self.logger = MetricsLogger(self.output_dir, info.is_main, config.log.jsonl, config.log.tensorboard)
        self.step, self.epoch, self.best = 0, 0, -math.inf
        self.batches_in_epoch = self.offset = self.samples_seen = 0  # this rank's, in the epoch / in total
        self.resumed_mid_epoch = False
        self.last_checkpoint: Path | None = None
        self.evals: list[dict[str, float]] = []

    def _setup_model(self, model: nn.Module | None) -> None:
        config, device = self.config, self.info.device
        self.model = (model if model is not None else build_model(config)).to(device)
        use_fast_layout(self.model, device)
        D.broadcast_module(self.model)
        section = config.model
        lock_towers(
            self.model, section.lock_image, section.lock_text, section.lock_image_unlocked_groups,
            section.lock_text_unlocked_layers, section.lock_text_freeze_layer_norm,
        )  # fmt: skip
        if config.model.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        set_patch_dropout(self.model, config.model.patch_dropout)

    def _setup_optimization(self) -> None:
        config, optim = self.config, self.config.optim
        self.precision = resolve_precision(config.precision, self.info.device)
        self.scaler = torch.amp.GradScaler(self.info.device.type) if self.precision == "fp16" else None
        self.params = [p for p in self.objective.parameters() if p.requires_grad]
        self.reducer = GradientReducer(self.params) if self.info.world_size > 1 else None
        self.ema = WeightEMA(self.model, config.ema_decay) if config.ema_decay else None
        if config.model.compile:
            compile_towers(self.model)
        self.optimizer = build_optimizer(self.objective, optim.lr, optim.weight_decay, optim.betas, optim.eps)
        self.total_steps = config.epochs * self.train_data.batches_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.schedule = LRSchedule(
            self.optimizer, optim.schedule, optim.lr, optim.warmup_steps, self.total_steps, optim.min_lr
        )

    def _default_objective(self) -> nn.Module:
        loss = self.config.loss
        return build_objective(loss.objective, self.model, self.train_data, loss).to(self.info.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=dtype)

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Collective (every rank must call it): gathers each rank's RNG and loader states."""
        rng = D.gather_objects(capture_rng())
        mid_epoch = self.batches_in_epoch > 0
        data = D.gather_objects(self.train_data.state_dict() if mid_epoch else None)
        return {
            "model": self.model.state_dict(),
            "objective_extra": {
                k: v for k, v in self.objective.state_dict().items() if not k.startswith("model.")
            },
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng,
            "data": data if mid_epoch else None,  # one loader state per rank, mid-epoch only
            "step": self.step,
            "epoch": self.epoch,
            "epoch_offset": self.offset,
            "batches_in_epoch": self.batches_in_epoch,
            "samples_seen": self.samples_seen,
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

    def _find_resume_state(self) -> tuple[Path, dict[str, Any]] | None:
        target = self.config.checkpoint.resume
        if target is None:
            return None
        if target == "auto":
            return self.checkpoints.latest()  # None: nothing yet, a fresh start
        return Path(target), load_state(target)

    def resume(self) -> None:
        found = self._find_resume_state()
        if found is None:
            return
        path, state = found
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict({**self.objective.state_dict(), **state["objective_extra"]})
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError(f"{path}: ema_decay is set but the checkpoint holds no EMA weights")
            self.ema.load_state_dict(state["ema"])
        if state["world_size"] != self.info.world_size and self.info.is_main:
            warnings.warn(
                f"{path}: saved with world size {state['world_size']}, resuming with {self.info.world_size}; "
                "the rest of this epoch is split differently (some samples may repeat or be skipped)",
                stacklevel=2,
            )
        restore_rng(self._own(state["rng"]))
        self._resume_data(state, path)
        self.step, self.epoch, self.best = state["step"], state["epoch"], state["best"]
        self.last_checkpoint = path
        if self.info.is_main:
            print(f"resumed from {path}: step {self.step}, epoch {self.epoch}, sample offset {self.offset}")

    def _own(self, per_rank: list) -> Any:
        """This rank's entry of a per-rank list saved in a state (rank 0's when the world size changed)."""
        return per_rank[self.info.rank] if len(per_rank) == self.info.world_size else per_rank[0]

    def _resume_data(self, state: dict[str, Any], path: Path) -> None:
        if state.get("data") is None and state["epoch_offset"] > 0:
            raise ValueError(f"{path}: a mid-epoch state without loader states (older format); resume cannot "
                             "be exact: start from an end-of-epoch checkpoint")  # fmt: skip
        if state.get("data") is not None:
            self.train_data.load_state_dict(self._own(state["data"]))
            self.resumed_mid_epoch = True
        self.offset = state["epoch_offset"]
        self.batches_in_epoch = state.get("batches_in_epoch", 0)
        self.samples_seen = state.get("samples_seen", state["step"] * self.train_data.batch_size)

    # ---- the loop ----------------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        backward = (
            (lambda loss: self.scaler.scale(loss).backward())
            if self.scaler is not None
            else torch.Tensor.backward
        )
        reducer = self.reducer
        if reducer is not None:
            reducer.prepare()
        metrics = accumulate_gradients(
            self.objective, batch, self.config.data.accum_steps, self._autocast, backward,
            before_last_backward=reducer.arm if reducer is not None else (lambda: None),
        )  # fmt: skip
        if reducer is not None:
            reducer.finish()
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
        if self.ema is not None:
            self.ema.update(self.model)
        return metrics

    def run(self) -> dict[str, Any]:
        self.resume()
        # The step of the newest checkpoint, None before the first; the same on every rank (save() is collective,
        # and only rank 0 knows last_checkpoint's path: deciding on it made rank 1 save alone at the end).
        self.saved_step = self.step if self.last_checkpoint is not None else None
        start_step, start_time = self.step, time.perf_counter()
        self.model.train()
        keep_locked_in_eval(self.model, self.config.model.lock_image, self.config.model.lock_text)
        skips = getattr(self.train_data, "skips", None)
        if skips is not None and skips.total and self.info.is_main:
            print(f"training data: {skips.summary()}")
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
        if self.saved_step != self.step:
            self.save()
        return self.finish(wall_time_s, self.step - start_step)

    def _run_epoch(self, progress, window: _Window) -> None:
        if not self.resumed_mid_epoch:
            self.train_data.set_epoch(self.epoch)
        self.resumed_mid_epoch = False
        batches = iter(self.train_data)
        while self.step < self.total_steps:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:  # the data ran out before batches_per_epoch: count the epoch as done
                self._data_ran_out()
                return
            batch = to_device(batch, self.info.device)
            window.data_wait_s += time.perf_counter() - wait_start
            metrics = self.train_step(batch)
            size = len(batch["index"])
            self.step, self.batches_in_epoch = self.step + 1, self.batches_in_epoch + 1
            self.offset, self.samples_seen = self.offset + size, self.samples_seen + size
            window.add(metrics, size * self.info.world_size)
            epoch_done = self.batches_in_epoch >= self.train_data.batches_per_epoch
            if epoch_done:
                self._next_epoch()
            progress.update(1)
            for callback in self.callbacks:
                info = {"step": self.step, "epoch": self.epoch, "offset": self.offset, "batch": batch}
                callback("step", info)
            self._periodic(progress, window, end_of_epoch=epoch_done)
            if epoch_done:
                return

    def _next_epoch(self) -> None:
        self.epoch, self.offset, self.batches_in_epoch = self.epoch + 1, 0, 0

    def _data_ran_out(self) -> None:
        if self.batches_in_epoch:
            warnings.warn(
                f"epoch {self.epoch} ended after {self.batches_in_epoch} of {self.train_data.batches_per_epoch} "
                "batches; check the loader's batches_per_epoch",
                stacklevel=3,
            )
        self._next_epoch()

    def _periodic(self, progress, window: _Window, end_of_epoch: bool) -> None:
        config = self.config
        if self.step % config.log.every_steps == 0 or self.step == self.total_steps:
            scalars = window.flush(self.schedule.last_lr, self.objective)
            self.logger.log(self.step, scalars)
            progress.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}")
        improved = False
        every = config.eval.zeroshot_every_steps
        if self.zeroshot is not None and every and self.step % every == 0:
            improved = self.evaluate()
        epoch_checkpoint = end_of_epoch and config.checkpoint.every_steps == 0
        periodic = config.checkpoint.every_steps and self.step % config.checkpoint.every_steps == 0
        if improved or epoch_checkpoint or periodic:
            self.save(is_best=improved)

    def evaluate(self) -> bool:
        """Zero-shot accuracy on rank 0 (others wait); True when the best metric improved."""
        evaluated = self.ema.model if self.ema is not None else self.model  # the EMA, when there is one
        result = self.zeroshot(evaluated) if self.info.is_main else {}
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
        return self.samples_seen * self.info.world_size

    def finish(self, wall_time_s: float, steps_run: int) -> dict[str, Any]:
        last_loss = next((r["train/loss"] for r in reversed(self.logger.history) if "train/loss" in r), None)
        skips = getattr(self.train_data, "skips", None)
        results = {
            "steps": self.step,
            "total_steps": self.total_steps,
            "images_seen": self.images_seen,
            "wall_time_s": wall_time_s,
            "samples_per_s": steps_run
            * self.train_data.batch_size
            * self.info.world_size
            / max(wall_time_s, 1e-9),
            "final_loss": last_loss,
            "zeroshot_top1": self.evals[-1].get("zeroshot_top1") if self.evals else None,
            "best": self.best if self.best > -math.inf else None,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "output_dir": str(self.output_dir),
            "world_size": self.info.world_size,
            "precision": self.precision,
            "data_skips": skips.as_dict() if skips is not None else {},
            "evals": self.evals,
        }
        if self.info.is_main:
            self._write_summary(results)
        self.logger.close()
        return results

    def _write_summary(self, results: dict[str, Any]) -> None:
        if self.config.log.plot and self.logger.history:
            results["curve_png"] = str(plot_curves(self.logger.history, self.output_dir / "train_curve.png"))
        rows = [{k: v for k, v in results.items() if k not in ("evals", "data_skips")}]
        summary = "# Training\n\n" + markdown_table(rows) + "\n## Zero-shot during training\n\n"
        summary += markdown_table(self.evals)
        results["files"] = write_results(self.output_dir, "train", results, summary)


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
