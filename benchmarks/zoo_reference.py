"""open_clip reference models for the zoo checks: any open_clip config name, random weights, optionally shallow.

Shallow = real widths, head widths, image sizes and options, one block per tower (ResNet: per stage) and a
1000-token vocabulary for towers with their own tokenizer (CLIP's BPE towers keep their 49,408 rows, the least
clipforge accepts for them): what the fast suite checks for every preset in seconds. Towers open_clip takes from timm
are made shallow through timm's own `depth` argument. Used by tests/test_zoo_presets.py, tests/test_model_naming.py
and benchmarks/zoo_coverage.py; needs open_clip (and timm for its timm towers).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from contextlib import ExitStack, contextmanager
from functools import cache
from unittest import mock

import torch
from torch import Tensor, nn

from benchmarks.references import randomize_
from clipforge.models import CLIPConfig, get_config

SHALLOW_VOCAB = 1000


def open_clip_config(name: str, shallow: bool) -> dict:
    """open_clip's model config for `name` (a copy), cut to one block per tower when `shallow`. An HF text tower
    is built empty (`hf_model_pretrained` off: random weights, no download)."""
    import open_clip

    cfg = json.loads(json.dumps(open_clip.get_model_config(name)))
    if cfg["text_cfg"].get("hf_model_name"):
        cfg["text_cfg"]["hf_model_pretrained"] = False
    if shallow:
        vision, text = cfg["vision_cfg"], cfg["text_cfg"]
        vision["layers"] = [1, 1, 1, 1] if isinstance(vision.get("layers"), list) else 1
        text["layers"] = 1
        if text.get("hf_tokenizer_name"):  # CLIP's BPE towers keep 49,408 rows: a smaller table is refused
            text["vocab_size"] = SHALLOW_VOCAB
    return cfg


_HF_DEPTH_KEYS = ("num_hidden_layers", "encoder_layers", "decoder_layers")


def hf_config_json(config_json: str, shallow: bool) -> str:
    """An HF text tower's recorded config.json, one layer deep with a SHALLOW_VOCAB vocabulary when `shallow`."""
    if not shallow:
        return config_json
    data = json.loads(config_json)
    data.update({key: 1 for key in _HF_DEPTH_KEYS if key in data}, vocab_size=SHALLOW_VOCAB)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _hf_from_pretrained(shallow: bool):
    """What open_clip's `AutoConfig.from_pretrained(hf_model_name)` returns here: the config clipforge records
    for that hub id (models/hf_text_configs.py), never a download."""
    import transformers

    from clipforge.models.hf_text_configs import HF_TEXT_CONFIGS

    def from_pretrained(name, *args, **kwargs):
        data = json.loads(hf_config_json(HF_TEXT_CONFIGS[name], shallow))
        return transformers.AutoConfig.for_model(data.pop("model_type"), **data)

    return from_pretrained


@cache
def _shallow_timm_kwargs(model_name: str) -> dict:
    """timm's own arguments for one block per stage: `depth` (ViT, EVA, PE, ViTamin), or `depths` / `layers`
    with one entry per stage (ConvNeXt, FastViT, Swin)."""
    from timm.models import create_model  # not `timm.create_model`, which shallow_towers patches

    with torch.device("meta"):
        trunk = create_model(model_name)
    params = inspect.signature(type(trunk).__init__).parameters
    if "depth" in params:
        return {"depth": 1}
    for key in ("depths", "layers"):
        if key in params:
            stages = trunk.stages if hasattr(trunk, "stages") else trunk.layers  # Swin: `layers`
            return {key: (1,) * len(stages)}
    raise ValueError(f"timm model {model_name!r}: no depth argument to make it shallow")


@contextmanager
def shallow_towers(shallow: bool = True):
    """Inside: timm towers (open_clip's and clipforge's alike) are built one block per stage when `shallow`,
    and open_clip's HF text towers read their config from clipforge's record (shallow too) instead of the Hub."""
    with ExitStack() as stack:
        try:
            import timm
        except ImportError:
            timm = None
        if timm is not None and shallow:
            real = timm.create_model
            stack.enter_context(mock.patch.object(
                timm, "create_model", lambda name, *a, **k: real(name, *a, **{**_shallow_timm_kwargs(name), **k})
            ))  # fmt: skip
        try:
            import transformers
        except ImportError:
            transformers = None
        if transformers is not None:
            stack.enter_context(
                mock.patch.object(transformers.AutoConfig, "from_pretrained", _hf_from_pretrained(shallow))
            )
        yield


def random_open_clip(name: str, seed: int = 0, shallow: bool = False, device: str = "cpu") -> nn.Module:
    """open_clip's model `name` (CLIP or CustomTextCLIP, as open_clip builds it) with random weights and BN
    statistics, fp32, eval mode. `device="meta"` builds it without memory (shapes only)."""
    import open_clip

    cfg = open_clip_config(name, shallow)
    custom = cfg.pop("custom_text", False) or bool(cfg["text_cfg"].get("hf_model_name"))
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    cfg.pop("multimodal_cfg", None)
    torch.manual_seed(seed)
    with shallow_towers(shallow), torch.device(device):
        model = cls(**cfg)
    if device == "meta":
        return model
    return randomize_(model.float().eval(), seed)


def clipforge_config(name: str, shallow: bool) -> CLIPConfig:
    """clipforge's preset `name`, cut the way `open_clip_config` cuts open_clip's."""
    config = get_config(name)
    if not shallow:
        return config
    layers = (1, 1, 1, 1) if config.vision.kind == "resnet" else 1
    return dataclasses.replace(
        config,
        vision=dataclasses.replace(config.vision, layers=layers),
        text=dataclasses.replace(
            config.text,
            layers=1,
            vocab_size=SHALLOW_VOCAB if config.text.hf_tokenizer_name else config.text.vocab_size,
            hf_config_json=config.text.hf_config_json and hf_config_json(config.text.hf_config_json, True),
        ),
    )


def zoo_inputs(config: CLIPConfig, batch: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random images and token ids of varied lengths that end in the token the text tower pools at (the
    largest id for "argmax", `eos_id` for "eos"), zero padding: what each tokenizer produces."""
    generator = torch.Generator().manual_seed(seed)
    size = config.vision.image_size
    images = torch.randn(batch, 3, size, size, generator=generator)
    vocab, length = config.text.vocab_size, config.text.context_length
    end = config.text.eos_id if config.text.pool == "eos" else vocab - 1
    text = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        n = int(torch.randint(2, length - 1, (1,), generator=generator))
        body = torch.randint(3, vocab - 2, (n,), generator=generator)
        text[row, :n] = body
        text[row, n] = end
    return images, text


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@torch.no_grad()
def compare(ours: nn.Module, theirs: nn.Module, images: Tensor, text: Tensor) -> dict[str, float]:
    """Max abs differences of both towers' embeddings (and the logit scale and bias)."""
    diffs = {
        "image": max_abs_diff(ours.encode_image(images), theirs.encode_image(images)),
        "text": max_abs_diff(ours.encode_text(text), theirs.encode_text(text)),
        "logit_scale": max_abs_diff(ours.logit_scale, theirs.logit_scale),
    }
    bias = ours.logit_bias, getattr(theirs, "logit_bias", None)
    if any(b is not None for b in bias):
        diffs["logit_bias"] = float("inf") if any(b is None for b in bias) else max_abs_diff(*bias)
    return diffs
