"""Front door: build, load and list models. One loader (`load_model`), one device default ('auto': CUDA
when available, else CPU) for every way in; `load`, `create_model` and `create_model_and_transforms` are
the openai/CLIP and open_clip spellings of the same thing."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clipforge.device import DEFAULT_DEVICE, resolve_device
from clipforge.models import CLIP, CLIPConfig, get_config
from clipforge.models import list_models as _list_presets
from clipforge.transforms import Preprocess, image_transform


def list_models() -> list[str]:
    return _list_presets()


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("~", ".", "/")) or Path(spec).suffix.lower() in (
        ".pt", ".pth", ".bin", ".safetensors", ".ckpt",
    )  # fmt: skip


def load_model(
    model: str | os.PathLike | CLIPConfig,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = DEFAULT_DEVICE,
) -> tuple[CLIP, Preprocess]:
    """(eval model on `device`, its exact eval preprocessing). The one way every caller gets a model.

    model: a checkpoint file or HF folder of any supported format (the architecture is read from it; `~`
    is expanded), a preset name (see `clipforge models`), or a CLIPConfig. For a preset or config,
    `pretrained` is a registry tag ('openai') or a weights file; None gives random weights."""
    if isinstance(model, CLIPConfig):
        net = _build(model, pretrained)
    else:
        spec = os.fspath(model)
        path = Path(spec).expanduser()
        if path.exists():
            if pretrained is not None:
                raise ValueError(f"{spec} is a checkpoint; --pretrained applies to preset names only")
            from clipforge.checkpoints import load_any

            net = load_any(path)
        elif _looks_like_path(spec):
            raise FileNotFoundError(f"{spec}: no such checkpoint file or folder")
        else:
            net = _build(spec, pretrained)  # KeyError naming the valid presets for a wrong name
    net = net.to(resolve_device(device)).eval()
    return net, Preprocess(net.config.preprocess)


def _build(name: str | CLIPConfig, pretrained: str | os.PathLike | None) -> CLIP:
    config = name if isinstance(name, CLIPConfig) else get_config(name)
    if pretrained is None:
        return CLIP(config)
    from clipforge.checkpoints import load_pretrained

    candidate = Path(os.fspath(pretrained)).expanduser()
    return load_pretrained(name, candidate if candidate.exists() else pretrained)


def create_model(
    name: str | CLIPConfig,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = DEFAULT_DEVICE,
) -> CLIP:
    """open_clip's `create_model`: a preset (or config) with weights from a registry tag ('openai') or a
    checkpoint path, or random weights when `pretrained` is None. Eval mode, on `device`."""
    return load_model(name if isinstance(name, CLIPConfig) else str(name), pretrained, device)[0]


def create_model_and_transforms(
    name: str | CLIPConfig,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = DEFAULT_DEVICE,
):
    """open_clip's signature: returns (model, train_transform, eval_transform)."""
    model, preprocess = load_model(name if isinstance(name, CLIPConfig) else str(name), pretrained, device)
    return model, image_transform(model.config.preprocess, train=True), preprocess


def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device = DEFAULT_DEVICE,
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
    path = Path(name_or_path).expanduser()
    if model is not None and path.exists():
        from clipforge.checkpoints import load_any

        net = load_any(path, config=model).to(resolve_device(device)).eval()
        return net, Preprocess(net.config.preprocess)
    if path.exists() or _looks_like_path(os.fspath(name_or_path)):
        return load_model(name_or_path, device=device)
    from clipforge.models.presets import OPENAI_NAMES

    name = OPENAI_NAMES.get(str(name_or_path), str(name_or_path))
    return load_model(name, "openai", device)
