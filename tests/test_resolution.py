"""Resolution changes (open_clip's `force_image_size`): a ViT checkpoint trained at 224 runs at 160/256/336 with
its grid of position embeddings resized as open_clip's `resize_pos_embed` does (bicubic, antialiased, class
token kept), and its preprocessing follows the new size. Parity with open_clip's own resize at 1e-5."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import clipforge
from benchmarks.references import compare_open_clip, randomize_, sample_inputs
from clipforge.checkpoints import load_any
from clipforge.checkpoints.open_clip_config import config_from_open_clip
from clipforge.models import CLIP, PRESETS, get_config, with_image_size
from clipforge.models.vit import resize_positional_embedding

open_clip = pytest.importorskip("open_clip")

TOL = 1e-5


def _shallow_b16(image_size: int) -> dict:
    """open_clip's ViT-B-16 at real widths, one block per tower, at `image_size`."""
    cfg = json.loads(json.dumps(open_clip.get_model_config("ViT-B-16")))
    cfg["vision_cfg"].update(layers=1, image_size=image_size)
    cfg["text_cfg"]["layers"] = 1
    return cfg


@pytest.mark.parametrize("image_size", [160, 256, 336])  # down (antialias matters) and up
def test_force_image_size_matches_open_clip(image_size, tmp_path, monkeypatch):
    """Both libraries' front doors, the same 224 weights: create_model(name, pretrained=file, force_image_size)."""
    name = "ViT-B-16-one-block"
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, name, _shallow_b16(224))
    monkeypatch.setitem(PRESETS, name, config_from_open_clip(_shallow_b16(224)))
    torch.manual_seed(0)
    path = tmp_path / "b16.pt"
    torch.save(randomize_(open_clip.create_model(name).eval(), seed=0).state_dict(), path)
    theirs = open_clip.create_model(name, pretrained=str(path), force_image_size=image_size).eval()
    ours, _, preprocess = clipforge.create_model_and_transforms(
        name, pretrained=path, force_image_size=image_size
    )
    native = load_any(path, config=name)
    grid = image_size // 16
    assert ours.visual.positional_embedding.shape == (grid * grid + 1, 768)
    assert torch.allclose(
        ours.visual.positional_embedding, theirs.visual.positional_embedding, atol=1e-6, rtol=0
    )
    assert torch.equal(
        ours.visual.positional_embedding[0], native.visual.positional_embedding[0]
    )  # class token
    assert ours.config.vision.image_size == ours.config.preprocess.image_size == image_size
    assert preprocess(Image.new("RGB", (300, 400), (10, 200, 30))).shape == (3, image_size, image_size)
    path.unlink()  # ~130 MB
    images, text = sample_inputs(ours, batch=2, seed=1)
    assert max(compare_open_clip(ours, theirs, images, text).values()) <= TOL


@pytest.mark.slow
def test_create_model_force_image_size_matches_open_clip_full_size(tmp_path):
    """ViT-B-32 at full size, 224 -> 256, through both libraries' front doors; the transform follows."""
    torch.manual_seed(2)
    path = tmp_path / "b32.pt"
    torch.save(randomize_(open_clip.create_model("ViT-B-32").eval(), seed=2).state_dict(), path)
    theirs = open_clip.create_model("ViT-B-32", pretrained=str(path), force_image_size=256).eval()
    ours, _, preprocess = clipforge.create_model_and_transforms(
        "ViT-B-32", pretrained=path, force_image_size=256
    )
    images, text = sample_inputs(ours, batch=2, seed=3)
    assert images.shape[-1] == 256
    assert max(compare_open_clip(ours, theirs, images, text).values()) <= TOL
    assert preprocess(Image.new("RGB", (300, 400), (10, 200, 30))).shape == (3, 256, 256)


def test_random_init_at_another_size_and_resnets_refused():
    model = clipforge.create_model("tiny-vit", force_image_size=64)
    assert model.visual.positional_embedding.shape == ((64 // 8) ** 2 + 1, 64)
    assert model.config.preprocess.image_size == 64
    same = CLIP(get_config("tiny-vit"))
    assert with_image_size(same, 32) is same
    with pytest.raises(ValueError, match="resolution changes need a ViT image tower"):
        with_image_size(CLIP(get_config("tiny-resnet")), 96)
    assert with_image_size(same, 36).visual.positional_embedding.shape == (4 * 4 + 1, 64)  # 36 // 8 = 4
    with pytest.raises(ValueError, match="not 1 prefix token"):
        resize_positional_embedding(torch.zeros(11, 4), 2)
    no_class_token = torch.randn(16, 4)  # SigLIP: the grid alone
    assert torch.equal(resize_positional_embedding(no_class_token, 4, prefix_tokens=0), no_class_token)
    assert resize_positional_embedding(no_class_token, 6, prefix_tokens=0).shape == (36, 4)
