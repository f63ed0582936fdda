"""An exponential moving average of the model's weights: evaluated and saved beside the trained weights.

After every optimizer step, ema <- ema + (1 - d_t) (weights - ema) for every floating-point parameter and
buffer (BatchNorm statistics too; integer buffers are copied), with the warmed-up decay
d_t = min(decay, (1 + t) / (10 + t)) so that the first updates do not keep the random init for long.
The average is a full copy of the model in eval mode, without gradients; its state (weights and the update
count t) goes into training checkpoints, so a resumed run continues the same average bit for bit.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1 - self.current_decay()
        averaged, latest, copied, copied_from = [], [], [], []
        pairs = zip(self._tensors(self.model), self._tensors(model), strict=True)
        for mine, theirs in pairs:
            if mine.is_floating_point():
                averaged.append(mine)
                latest.append(theirs.detach())
            else:
                copied.append(mine)
                copied_from.append(theirs)
        if averaged:
            torch._foreach_lerp_(averaged, latest, weight)
        for mine, theirs in zip(copied, copied_from, strict=True):
            mine.copy_(theirs)
        self.updates += 1

    @staticmethod
    def _tensors(model: nn.Module) -> list[torch.Tensor]:
        return [*model.parameters(), *model.buffers()]

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
