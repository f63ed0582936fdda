"""Monitoring: JSONL + TensorBoard scalars (rank 0 only), periodic zero-shot accuracy, a final curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clipforge.figures import pyplot, save_figure
from clipforge.zeroshot.classifier import build_classifier


class MetricsLogger:
    """Appends {"step": s, **scalars} lines to metrics.jsonl and mirrors them to TensorBoard.

    Disabled (a no-op) on ranks other than 0. Lines are flushed as written, so a killed run keeps its log."""

    def __init__(self, output_dir: str | Path, enabled: bool, jsonl: bool = True, tensorboard: bool = False):
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        self._file = self._writer = None
        if not enabled:
            return
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        if jsonl:
            self._file = open(output_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))

    def log(self, step: int, scalars: dict[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        row = {"step": step, **{f"{prefix}/{k}": v for k, v in scalars.items()}}
        self.history.append(row)
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()


class ZeroShotEval:
    """Top-1 zero-shot accuracy of a CLIP on held-out labelled images, with prompt-ensembled class embeddings.

    images: (N, 3, H, W) already preprocessed; labels: (N,) class ids indexing `classnames`."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        classnames: list[str],
        templates: list[str],
        batch_size: int = 256,
    ):
        if len(images) != len(labels):
            raise ValueError(f"zero-shot set: {len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.classnames, self.templates, self.batch_size = list(classnames), list(templates), batch_size

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            classifier = build_classifier(
                model, self.classnames, self.templates, cache_dir=False, progress=False
            ).float()  # (E, C)
            correct = 0
            for start in range(0, len(self.images), self.batch_size):
                images = self.images[start : start + self.batch_size].to(device)
                features = model.encode_image(images, normalize=True).float()  # (b, E)
                predictions = (features @ classifier.to(device)).argmax(dim=-1)
                correct += int((predictions.cpu() == self.labels[start : start + self.batch_size]).sum())
        finally:
            model.train(was_training)
        return {"zeroshot_top1": correct / len(self.images)}


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Loss and zero-shot accuracy against step, as a PNG (None when there is nothing to plot)."""
    loss = [(r["step"], r["train/loss"]) for r in history if "train/loss" in r]
    accuracy = [(r["step"], r["eval/zeroshot_top1"]) for r in history if "eval/zeroshot_top1" in r]
    if not loss and not accuracy:
        return None
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    if loss:
        axes[0].plot(*zip(*loss, strict=True))
    axes[0].set(xlabel="step", ylabel="train loss", title="contrastive loss")
    if accuracy:
        axes[1].plot(*zip(*accuracy, strict=True), marker="o")
    axes[1].set(xlabel="step", ylabel="top-1", title="zero-shot accuracy")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
