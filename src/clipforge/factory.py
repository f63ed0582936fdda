"""Front door: build, load and list models the way openai/CLIP and open_clip users expect."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clipforge.device import resolve_device
from clipforge.models import CLIP, CLIPConfig, get_config, with_image_size
from clipforge.models import list_models as _list_presets
from clipforge.transforms import image_transform


def list_models() -> list[str]:
    return _list_presets()


def create_model(
    name: str | CLIPConfig,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    force_image_size: int | None = None,
) -> CLIP:
    """Build a preset (or a config) and load weights: a registry tag ('openai', 'laion2b_s34b_b79k', ...; see
    `clipforge.checkpoints.list_pretrained`) or a checkpoint path. `name` may also be a Hub repo,
    'hf-hub:org/name[@revision]', whose files give both architecture and weights. `force_image_size` runs a
    ViT at another resolution (position embeddings resized as open_clip does; preprocessing follows)."""
    from clipforge.checkpoints.hub import is_hub_spec

    if is_hub_spec(name):
        if pretrained is not None:
            raise ValueError(
                f"{name}: a Hub repo carries its own weights; pretrained={pretrained!r} is not used"
            )
        from clipforge.checkpoints import load_hub

        model = load_hub(name)
    elif pretrained is None:
        config = name if isinstance(name, CLIPConfig) else get_config(name)
        model = CLIP(config if force_image_size is None else config.with_image_size(force_image_size))
    else:
        from clipforge.checkpoints import load_pretrained

        model = load_pretrained(name, pretrained)
    if force_image_size is not None:
        model = with_image_size(model, force_image_size)
    return model.to(resolve_device(device)).eval()


def create_model_and_transforms(
    name: str | CLIPConfig,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    force_image_size: int | None = None,
):
    """open_clip's signature: returns (model, train_transform, eval_transform), the transforms built from the
    weights' preprocessing (a registry tag's or a Hub repo's) at the model's image size."""
    model = create_model(name, pretrained, device, force_image_size)
    pre = model.config.preprocess
    return model, image_transform(pre, train=True), image_transform(pre, train=False)


def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "auto",
    jit: bool = False,
    model: str | None = None,
):
    """openai/CLIP's `load`: one of OpenAI's model names ('ViT-B/32', 'RN50', ...: OpenAI's weights,
    QuickGELU, downloaded if needed), a Hub repo ('hf-hub:org/name[@revision]') or a checkpoint file of any
    supported format. Returns (model, preprocess).

    `model`: the architecture name a file was built with, for files that do not record it (OpenAI-layout
    state_dicts and open_clip checkpoints): 'ViT-B-32' (GELU) vs 'ViT-B-32-quickgelu', as in open_clip."""
    if jit:
        raise ValueError(
            "jit=True is not supported: clipforge models are eager nn.Modules (use torch.compile)"
        )
    from clipforge.checkpoints import load_any
    from clipforge.checkpoints.hub import is_hub_spec
    from clipforge.models.presets import OPENAI_NAMES

    device = resolve_device(device)
    if is_hub_spec(name_or_path):
        net = create_model(str(name_or_path))
    elif Path(name_or_path).exists():
        net = load_any(name_or_path, config=model)
    else:
        name = OPENAI_NAMES.get(str(name_or_path), str(name_or_path))
        net = create_model(name, pretrained="openai")
    net = net.to(device).eval()
    return net, image_transform(net.config.preprocess)
