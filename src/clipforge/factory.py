"""Front door: build, load and list models the way openai/CLIP and open_clip users expect."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clipforge.device import resolve_device
from clipforge.models import CLIP, CLIPConfig, get_config
from clipforge.models import list_models as _list_presets
from clipforge.transforms import image_transform


def list_models() -> list[str]:
    return _list_presets()


def create_model(
    name: str | CLIPConfig,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> CLIP:
    """Build a preset (or a config) and load weights: a registry tag ('openai') or a checkpoint path."""
    config = name if isinstance(name, CLIPConfig) else get_config(name)
    if pretrained is None:
        model = CLIP(config)
    else:
        from clipforge.checkpoints import load_pretrained

        model = load_pretrained(config if isinstance(name, CLIPConfig) else name, pretrained)
    return model.to(resolve_device(device)).eval()


def create_model_and_transforms(
    name: str | CLIPConfig,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
):
    """open_clip's signature: returns (model, train_transform, eval_transform)."""
    model = create_model(name, pretrained, device)
    pre = model.config.preprocess
    return model, image_transform(pre, train=True), image_transform(pre, train=False)


def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "auto",
    jit: bool = False,
    model: str | None = None,
):
    """openai/CLIP's `load`: one of OpenAI's model names ('ViT-B/32', 'RN50', ...: OpenAI's weights,
    QuickGELU, downloaded if needed) or a checkpoint file of any supported format. Returns (model, preprocess).

    `model`: the architecture name a file was built with, for files that do not record it (OpenAI-layout
    state_dicts and open_clip checkpoints): 'ViT-B-32' (GELU) vs 'ViT-B-32-quickgelu', as in open_clip."""
    if jit:
        raise ValueError(
            "jit=True is not supported: clipforge models are eager nn.Modules (use torch.compile)"
        )
    from clipforge.checkpoints import load_any
    from clipforge.models.presets import OPENAI_NAMES

    device = resolve_device(device)
    if Path(name_or_path).exists():
        net = load_any(name_or_path, config=model)
    else:
        name = OPENAI_NAMES.get(str(name_or_path), str(name_or_path))
        net = create_model(name, pretrained="openai")
    net = net.to(device).eval()
    return net, image_transform(net.config.preprocess)
