"""Learning-rate schedules as pure functions of the step (so the schedule's state is just the step)."""

from __future__ import annotations

import math

import torch


def cosine_with_warmup(
    step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> float:
    """Linear warmup from 0 to base_lr over warmup_steps, then cosine decay to min_lr at total_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def constant_with_warmup(
    step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr


SCHEDULES = {"cosine": cosine_with_warmup, "constant": constant_with_warmup}


class LRSchedule:
    """Sets every param group's lr for the coming step; `state_dict` holds the step for exact resume."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str,
        base_lr: float,
        warmup_steps: int,
        total_steps: int,
        min_lr: float = 0.0,
    ):
        if kind not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {sorted(SCHEDULES)}, got {kind!r}")
        self.optimizer, self.function = optimizer, SCHEDULES[kind]
        self.base_lr, self.warmup_steps, self.total_steps, self.min_lr = (
            base_lr,
            warmup_steps,
            total_steps,
            min_lr,
        )
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        return self.function(step, self.base_lr, self.warmup_steps, self.total_steps, self.min_lr)

    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    @property
    def last_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
