"""One way for every app to get a model: a preset name, optionally with a pretrained tag or a checkpoint."""

from __future__ import annotations

import os

import torch

from clipforge.transforms import Preprocess


def load_model(
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, Preprocess]:
    """(eval model, its preprocessing). `checkpoint` wins (any supported format, architecture read from
    it); otherwise `model` preset with `pretrained` weights (a tag like 'openai' or a file), or random
    weights when neither is given (useful only for tests and smoke runs)."""
    from clipforge.device import resolve_device

    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
        from clipforge.checkpoints import load_any

        net = load_any(checkpoint)
    elif model is not None:
        from clipforge.factory import create_model

        net = create_model(model, pretrained=pretrained)
    else:
        raise ValueError("give --checkpoint PATH or --model NAME (see `clipforge models`)")
    net = net.to(resolve_device(device)).eval()
    return net, Preprocess(net.config.preprocess)
