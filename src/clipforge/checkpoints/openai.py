"""OpenAI's CLIP checkpoints: TorchScript archives or plain state_dicts in OpenAI's layout.

open_clip uses the same layout, so `openai_to_clipforge` / `clipforge_to_openai` are also its name
map. Only this module (and hf.py for HF) knows foreign names; the model's own names never change.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import replace
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from clipforge.checkpoints.io import (
    CheckpointError,
    is_safetensors,
    is_torchscript,
    model_from_state,
    read_safetensors,
    torch_load_safe,
)
from clipforge.checkpoints.torchscript import read_torchscript_weights
from clipforge.fileio import atomic_write
from clipforge.models import CLIP, PRESETS, CLIPConfig, PreprocessConfig, TextConfig, VisionConfig
from clipforge.models.config import Activation

# Keys that are not weights: the TorchScript archives' scalars and the causal-mask buffer.
IGNORED_KEYS = ("input_resolution", "context_length", "vocab_size")
IGNORED_SUFFIXES = ("attn_mask", "position_ids")

# (OpenAI / open_clip fragment, clipforge fragment), applied in order to each key.
_BLOCK_NAMES = (
    (".transformer.resblocks.", ".transformer.blocks."),
    (".attn.in_proj_weight", ".attn.qkv.weight"),
    (".attn.in_proj_bias", ".attn.qkv.bias"),
    (".attn.out_proj.", ".attn.proj."),
    (".mlp.c_fc.", ".mlp.fc1."),
    (".mlp.c_proj.", ".mlp.fc2."),
    (".downsample.0.", ".downsample.conv."),
    (".downsample.1.", ".downsample.bn."),
)


def is_openai_layout(state_dict: dict[str, Tensor]) -> bool:
    return "text_projection" in state_dict and "token_embedding.weight" in state_dict


def _is_vit(state_dict: dict[str, Tensor]) -> bool:
    return "visual.positional_embedding" in state_dict  # a ResNet keeps its one under visual.attnpool.


def openai_to_clipforge(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """OpenAI / open_clip names -> clipforge names (tensors are shared, not copied)."""
    vit = _is_vit(state_dict)
    out = {}
    for key, value in state_dict.items():
        if key in IGNORED_KEYS or key.endswith(IGNORED_SUFFIXES):
            continue
        name = key if key.startswith("visual.") or key in ("logit_scale", "logit_bias") else f"text.{key}"
        name = "." + name
        for old, new in _BLOCK_NAMES:
            name = name.replace(old, new)
        name = name[1:]
        if vit and name == "visual.conv1.weight":
            name = "visual.patch_embed.weight"
        out[name] = value
    return out


def clipforge_to_openai(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """clipforge names -> OpenAI / open_clip names (loads strictly into either)."""
    vit = _is_vit(state_dict)
    out = {}
    for key, value in state_dict.items():
        name = "." + (key[len("text.") :] if key.startswith("text.") else key)  # logit_bias stays as it is
        for old, new in _BLOCK_NAMES:
            name = name.replace(new, old)
        name = name[1:]
        if vit and name == "visual.patch_embed.weight":
            name = "visual.conv1.weight"
        out[name] = value
    return out


def _count_blocks(state_dict: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state_dict if (m := pattern.match(k))})


def infer_config(state_dict: dict[str, Tensor], activation: Activation) -> CLIPConfig:
    """The architecture of an OpenAI-layout state_dict: shapes from its tensors, `activation` as given (never
    overridden). What shapes cannot show -- head counts, pooling, preprocessing -- comes from the preset with
    exactly these tensor names and shapes (preferring one with this activation); with several that differ in
    those, or none, a warning says what was guessed (none: OpenAI's 64 dims per head)."""
    exact = presets_with_shapes(openai_to_clipforge(state_dict))
    if exact:
        preferred = [p for p in exact if p.activation == activation] or exact
        candidates = {_hidden_signature(p): p for p in preferred}
        if len(candidates) == 1:
            return replace(preferred[0], activation=activation)
        found = "; ".join(f"{v} vision / {t} text heads, {pre.image_size} px" for v, t, pre, *_ in candidates)
        reason = f"its shapes fit {len(candidates)} presets that differ in what shapes cannot show ({found})"
        config = replace(preferred[0], activation=activation)
    else:
        config = _config_from_shapes(state_dict, activation)
        reason = "no preset has its shapes"
    warnings.warn(
        f"the state_dict does not record its head counts and {reason}; assumed {config.vision.num_heads} "
        f"vision / {config.text.heads} text heads, {config.vision.image_size} px. If the model was built "
        "with other settings its outputs will be wrong: pass its model name or config.",
        stacklevel=3,
    )
    return config


@cache
def _preset_shapes(name: str) -> frozenset:
    with torch.device("meta"):
        model = CLIP(PRESETS[name])
    return frozenset((k, tuple(v.shape)) for k, v in model.state_dict().items() if "num_batches" not in k)


def presets_with_shapes(state_dict: dict[str, Tensor]) -> list[CLIPConfig]:
    """The presets whose models have exactly these (clipforge) tensor names and shapes (towers of clipforge's
    own kinds: a timm or Hugging Face tower is not guessed from shapes, the caller names it)."""
    shapes = frozenset((k, tuple(v.shape)) for k, v in state_dict.items() if "num_batches" not in k)
    native = [name for name, p in PRESETS.items() if p.vision.kind != "timm" and p.text.kind != "hf"]
    return [PRESETS[name] for name in native if _preset_shapes(name) == shapes]  # timm/HF towers: by name


def _config_from_shapes(sd: dict[str, Tensor], activation: Activation) -> CLIPConfig:
    embed_dim = sd["text_projection"].shape[1]
    text_width = sd["ln_final.weight"].shape[0]
    text = TextConfig(
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        width=text_width,
        heads=max(text_width // 64, 1),
        layers=_count_blocks(sd, "transformer.resblocks."),
        mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
    )
    if "visual.proj" in sd:
        width = sd["visual.conv1.weight"].shape[0]
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = VisionConfig(
            kind="vit",
            image_size=patch * grid,
            width=width,
            layers=_count_blocks(sd, "visual.transformer.resblocks."),
            patch_size=patch,
            heads=max(width // 64, 1),
            mlp_ratio=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        )
    elif "visual.attnpool.positional_embedding" in sd:
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        vision = VisionConfig(
            kind="resnet",
            image_size=grid * 32,
            width=width,
            layers=tuple(_count_blocks(sd, f"visual.layer{i}.") for i in range(1, 5)),
            heads=width * 32 // 64,
        )
    else:
        raise ValueError("state_dict has neither visual.proj (ViT) nor visual.attnpool (ResNet) weights")
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=vision,
        text=text,
        activation=activation,
        preprocess=PreprocessConfig(image_size=vision.image_size),
    )


def _shape_signature(config: CLIPConfig) -> tuple:
    v, t = config.vision, config.text
    return (config.embed_dim, v.kind, v.image_size, v.width, v.layers, v.patch_size, v.mlp_ratio,
            t.context_length, t.vocab_size, t.width, t.layers, t.mlp_ratio)  # fmt: skip


def _hidden_signature(config: CLIPConfig) -> tuple:
    """What a state_dict cannot show, activation aside: heads, preprocessing, then every other field."""
    rest = replace(config, activation="gelu", preprocess=PreprocessConfig())
    return (config.vision.num_heads, config.text.heads, config.preprocess, rest)


def match_preset(config: CLIPConfig) -> CLIPConfig | None:
    """The preset equal to `config` in everything but preprocessing (whose preprocessing it then gives), if any."""
    return next(
        (preset for preset in PRESETS.values() if replace(preset, preprocess=config.preprocess) == config),
        None,
    )


def preset_name(config: CLIPConfig) -> str | None:
    return next((name for name, preset in PRESETS.items() if preset == config), None)


def read_openai_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """OpenAI-layout tensors from a TorchScript archive, a torch.save'd state_dict or safetensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if is_torchscript(path):
        return read_torchscript_weights(path)
    if is_safetensors(path):
        return read_safetensors(path)[0]
    obj = torch_load_safe(path)
    if not (isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values())):
        raise ValueError(f"{path}: expected a state_dict (name -> tensor), got {type(obj).__name__}")
    return obj


def model_from_openai_state(
    state_dict: dict[str, Tensor],
    config: CLIPConfig | None,
    source: str | os.PathLike,
    activation: Activation | None = None,
) -> CLIP:
    """`config` (from a model name) fixes everything; without it the architecture comes from the shapes and
    `activation` -- or, when the caller cannot know it (a bare state_dict records none), QuickGELU with a
    warning, since a GELU-trained open_clip model would then give wrong outputs."""
    if not is_openai_layout(state_dict):
        raise ValueError(
            f"{source}: not an OpenAI/open_clip-layout state_dict (no 'text_projection' and "
            f"'token_embedding.weight'); first keys: {list(state_dict)[:5]}"
        )
    if config is None:
        if activation is None:
            warnings.warn(
                f"{source}: the file does not record its activation; assumed QuickGELU (OpenAI's weights). "
                "open_clip models built from a plain config name (e.g. 'ViT-B-32', as LAION/DataComp/DFN/"
                "MetaCLIP weights are) use GELU: give the name, e.g. clipforge.load(path, model='ViT-B-32') "
                "or create_model_and_transforms('ViT-B-32', pretrained=path); use 'ViT-B-32-quickgelu' "
                "to confirm QuickGELU and silence this warning.",
                stacklevel=3,
            )
            activation = "quick_gelu"
        try:
            config = infer_config(state_dict, activation)
        except KeyError as err:
            raise CheckpointError(
                source, f"lacks tensor {err.args[0]!r} (an incomplete CLIP state_dict)"
            ) from None
        except (IndexError, ZeroDivisionError) as err:
            raise CheckpointError(source, f"tensor shapes do not describe a CLIP model ({err})") from None
    return model_from_state(config, openai_to_clipforge(state_dict), source)


def load_openai(path: str | os.PathLike, config: CLIPConfig | None = None) -> CLIP:
    """A CLIP model from an OpenAI checkpoint (TorchScript or state_dict), in the file's dtype.

    The architecture is inferred from tensor shapes unless `config` is given. A TorchScript archive is one of
    OpenAI's released files (QuickGELU); a bare state_dict does not say, see `model_from_openai_state`."""
    path = Path(path)
    activation = "quick_gelu" if path.is_file() and is_torchscript(path) else None
    return model_from_openai_state(read_openai_state_dict(path), config, path, activation)


def save_openai(model: CLIP, path: str | os.PathLike) -> Path:
    """Save the weights as a plain OpenAI-layout state_dict (`torch.save`, loads with OpenAI's
    `build_model` and open_clip); the TorchScript form is not written."""
    state_dict = {k: v.detach().cpu() for k, v in clipforge_to_openai(model.state_dict()).items()}
    return atomic_write(path, lambda f: torch.save(state_dict, f))
