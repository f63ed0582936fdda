"""Contrastive training: `fit(TrainConfig(...))` from one CPU to torchrun on many GPUs, resumable to the bit."""

from clipforge.train.config import TrainConfig
from clipforge.train.loop import build_model, fit

__all__ = ["TrainConfig", "build_model", "fit"]
