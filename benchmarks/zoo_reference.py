"""open_clip reference models for the zoo checks: any open_clip config name, random weights, optionally shallow.

Shallow = real widths, head widths, image sizes and options, one block per tower (ResNet: per stage) and a
1000-token vocabulary for towers with their own tokenizer (CLIP's BPE towers keep their 49,408 rows, the least
clipforge accepts for them): what the fast suite checks for every preset in seconds. Towers open_clip takes from timm
are made shallow through timm's own `depth` argument. Used by tests/test_zoo_presets.py, tests/test_model_naming.py
and benchmarks/zoo_coverage.py; needs open_clip (and timm for its timm towers).
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from unittest import mock

import torch
from torch import Tensor, nn

from benchmarks.references import randomize_
from clipforge.models import CLIPConfig, get_config

SHALLOW_VOCAB = 1000


def open_clip_config(name: str, shallow: bool) -> dict:
    """open_clip's model config for `name` (a copy), cut to one block per tower when `shallow`."""
    import open_clip

    cfg = json.loads(json.dumps(open_clip.get_model_config(name)))
    if shallow:
        vision, text = cfg["vision_cfg"], cfg["text_cfg"]
        vision["layers"] = [1, 1, 1, 1] if isinstance(vision.get("layers"), list) else 1
        text["layers"] = 1
        if text.get("hf_tokenizer_name"):  # CLIP's BPE towers keep 49,408 rows: a smaller table is refused
            text["vocab_size"] = SHALLOW_VOCAB
    return cfg


@contextmanager
def _timm_depth(depth: int | None):
    """timm towers built inside open_clip get `depth` blocks (timm's ViT/EVA constructors take it)."""
    if depth is None:
        yield
        return
    import open_clip.timm_model as timm_model

    real = timm_model.timm.create_model
    with mock.patch.object(
        timm_model.timm, "create_model", lambda *a, **k: real(*a, **{**k, "depth": depth})
    ):
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
    with _timm_depth(1 if shallow else None), torch.device(device):
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
