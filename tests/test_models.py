"""Model shapes, typed outputs, and parameter counts of every preset against open_clip."""

from __future__ import annotations

import pytest
import torch

from clipforge.models import CLIP, PRESETS, get_config
from clipforge.models.config import CLIPConfig
from clipforge.models.presets import CLIPFORGE_SPECS

# timm / Hugging Face towers are built by the same library on both sides: tests/test_zoo_presets.py and
# benchmarks/zoo_coverage.py check them key for key (a meta build of each large one costs seconds here)
_OWN_TOWERS = [n for n, p in PRESETS.items() if p.vision.kind != "timm" and p.text.kind != "hf"]


@pytest.mark.parametrize("name", [n for n in _OWN_TOWERS if n not in CLIPFORGE_SPECS])
def test_param_count_equals_open_clip(name: str) -> None:
    pytest.importorskip("open_clip")
    pytest.importorskip("timm")  # open_clip builds SigLIP's image tower from timm
    from benchmarks.zoo_reference import random_open_clip

    with torch.device("meta"):
        ours = CLIP(get_config(name)).num_parameters()
    theirs = sum(p.numel() for p in random_open_clip(name, device="meta").parameters())
    assert ours == theirs


def test_vit_b32_param_count_is_the_published_one() -> None:
    with torch.device("meta"):
        assert CLIP(get_config("ViT-B/32")).num_parameters() == 151_277_313


@pytest.mark.parametrize("name", [n for n in PRESETS if n.startswith("tiny")])
def test_tiny_forward_shapes_and_unit_norm(name: str) -> None:
    torch.manual_seed(0)
    config = get_config(name)
    model = CLIP(config).eval()
    images = torch.randn(3, 3, config.vision.image_size, config.vision.image_size)
    text = torch.zeros(3, config.text.context_length, dtype=torch.long)
    text[:, 0], text[:, 1:4], text[:, 4] = 49406, 100, 49407
    out = model(images, text)
    assert out.image_features.shape == (3, config.embed_dim)
    assert out.text_features.shape == (3, config.embed_dim)
    torch.testing.assert_close(out.image_features.norm(dim=-1), torch.ones(3))
    assert out.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert out.logits_per_image().shape == (3, 3)


def test_text_trimming_is_exact() -> None:
    torch.manual_seed(0)
    model = CLIP(get_config("tiny-vit")).eval()
    text = torch.zeros(2, 77, dtype=torch.long)
    text[:, 0], text[0, 1:5], text[0, 5], text[1, 1:3], text[1, 3] = 49406, 7, 49407, 9, 49407
    with torch.no_grad():
        trimmed = model.encode_text(text)
        model.text.trim_to_longest = False
        full = model.encode_text(text)
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=0)


def test_config_round_trip_and_unknown_field() -> None:
    config = get_config("RN50")
    assert CLIPConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="bogus"):
        CLIPConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="ViT-B-32"):
        get_config("ViT-X-99")
