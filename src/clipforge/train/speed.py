"""Training speed options that leave the mathematics alone: torch.compile of the towers, memory layout and
pinned host memory for the batches."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def compile_towers(model: nn.Module, backend: str = "inductor", mode: str | None = None) -> nn.Module:
    """Compile the image and text towers in place (`nn.Module.compile`: parameter names, state_dict and
    checkpoints stay as they are). The text tower then runs at its full context length: trimming to the
    longest text of each batch would give the compiler a new shape every batch."""
    for tower in (model.visual, model.text):
        tower.compile(backend=backend, mode=mode)
    model.text.trim_to_longest = False
    return model


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """A batch on the training device. To a GPU through pinned host memory, so the copy is asynchronous
    (the host queues the step's kernels while the batch is still in flight)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {
        k: (v if v.is_pinned() else v.pin_memory()).to(device, non_blocking=True) for k, v in batch.items()
    }
