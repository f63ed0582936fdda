"""transformers CLIP, SigLIP and SigLIP2 folders load with parity, and `convert --to hf` writes each family as
its users load it. Reference models are built offline from transformers' config classes with random weights."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchmarks.references import randomize_
from benchmarks.zoo_reference import clipforge_config, compare, max_abs_diff, random_open_clip, zoo_inputs
from clipforge.checkpoints import load_any, save

transformers = pytest.importorskip("transformers")
TOL = 1e-4
TEXT = dict(
    vocab_size=1000, hidden_size=96, intermediate_size=200, num_hidden_layers=2, num_attention_heads=4
)
VISION = dict(hidden_size=64, intermediate_size=130, num_hidden_layers=2, num_attention_heads=4, patch_size=8)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:  # (B, C, H, W) -> (B, N, p * p * C)
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // patch, patch, W // patch, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // patch) * (W // patch), patch * patch * C)


@torch.no_grad()
def hf_features(reference, images, text, siglip2_patch: int | None = None):
    if siglip2_patch is None:
        image = reference.get_image_features(pixel_values=images).pooler_output
    else:
        grid = images.shape[-1] // siglip2_patch
        image = reference.get_image_features(
            pixel_values=patchify(images, siglip2_patch),
            pixel_attention_mask=torch.ones(images.shape[0], grid * grid, dtype=torch.long),
            spatial_shapes=torch.tensor([[grid, grid]] * images.shape[0]),
        ).pooler_output
    return image, reference.get_text_features(input_ids=text).pooler_output


def check(ours, reference, siglip2_patch=None, seed=1):
    images, text = zoo_inputs(ours.config, batch=2, seed=seed)
    image, txt = hf_features(reference, images, text, siglip2_patch)
    with torch.no_grad():
        assert max_abs_diff(ours.encode_image(images), image) <= TOL
        assert max_abs_diff(ours.encode_text(text), txt) <= TOL
        assert max_abs_diff(ours.logit_scale, reference.logit_scale) == 0
        if ours.logit_bias is not None:
            assert max_abs_diff(ours.logit_bias, reference.logit_bias) == 0


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_siglip_folders_load_and_save_back_with_parity(kind, tmp_path):
    t = {**TEXT, "max_position_embeddings": 16, "projection_size": 64, "hidden_act": "gelu_pytorch_tanh"}
    if kind == "siglip":
        config = transformers.SiglipConfig(text_config=t, vision_config={**VISION, "image_size": 32})
        reference = transformers.SiglipModel(config)
    else:
        config = transformers.Siglip2Config(text_config=t, vision_config={**VISION, "num_patches": 16})
        reference = transformers.Siglip2Model(config)
    randomize_(reference.eval(), seed=0).save_pretrained(tmp_path / kind)
    (tmp_path / kind / "tokenizer.json").write_text("{}")  # its own tokenizer travels with the model
    ours = load_any(tmp_path / kind)
    assert ours.config.text.hf_tokenizer_name == str(tmp_path / kind)
    assert (ours.config.vision.pool, ours.config.text.pool, ours.config.text_activation) == (
        "map",
        "last",
        "gelu_tanh",
    )
    check(ours, reference, siglip2_patch=8 if kind == "siglip2" else None)

    save(ours, tmp_path / "back", "hf")  # SigLIP and SigLIP2 alike: the fixed-size SiglipModel format
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "siglip"
    assert (tmp_path / "back" / "tokenizer.json").is_file()
    check(ours, transformers.SiglipModel.from_pretrained(tmp_path / "back").eval())
    text = dataclasses.replace(ours.config.text, hf_tokenizer_name=str(tmp_path / "back"))
    assert load_any(tmp_path / "back").config == dataclasses.replace(ours.config, text=text)


def test_clip_folder_honours_acts_eps_eos_and_preprocessing(tmp_path):
    text = {
        **TEXT,
        "max_position_embeddings": 16,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "eos_token_id": 7,
    }
    vision = {**VISION, "image_size": 32, "hidden_act": "quick_gelu"}
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=48)
    reference = randomize_(transformers.CLIPModel(config).eval(), seed=2)
    reference.save_pretrained(tmp_path / "clip")
    processor = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32}, "do_center_crop": True,
                 "crop_size": {"height": 32, "width": 32}, "resample": 2, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}  # fmt: skip
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps(processor))
    ours = load_any(tmp_path / "clip")
    c = ours.config
    assert (c.text_activation, c.vision_activation, c.text.norm_eps) == ("gelu", "quick_gelu", 1e-6)
    assert (c.text.pool, c.text.eos_id) == ("eos", 7)  # HF pools at the first eos id unless it is 2
    assert (c.preprocess.interpolation, c.preprocess.mean, c.preprocess.std) == (
        "bilinear",
        (0.5,) * 3,
        (0.25,) * 3,
    )
    images, ids = zoo_inputs(c, batch=3, seed=3)
    ids[:, 5] = 7  # eos in the middle of every text: pooled there, not at the largest id
    image, txt = hf_features(reference, images, ids)
    with torch.no_grad():
        assert max_abs_diff(ours.encode_image(images), image) <= TOL
        assert max_abs_diff(ours.encode_text(ids), txt) <= TOL
    save(ours, tmp_path / "back", "hf")
    back = transformers.CLIPModel.from_pretrained(tmp_path / "back").eval()
    image2, txt2 = hf_features(back, images, ids)
    assert max_abs_diff(image, image2) <= TOL and max_abs_diff(txt, txt2) <= TOL
    written = json.loads((tmp_path / "back" / "preprocessor_config.json").read_text())
    assert (written["resample"], written["image_mean"]) == (2, [0.5] * 3)


@pytest.mark.parametrize("name", ["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2-256"])
def test_open_clip_siglip_converts_to_siglipmodel(name, tmp_path):
    """`convert --to hf` of an open_clip SigLIP checkpoint: SiglipModel.from_pretrained gives its outputs."""
    reference = random_open_clip(name, seed=4, shallow=True)
    torch.save(reference.state_dict(), tmp_path / "oc.pt")
    ours = load_any(tmp_path / "oc.pt", config=clipforge_config(name, shallow=True))
    save(ours, tmp_path / "hf", "hf")
    hf_model = transformers.SiglipModel.from_pretrained(tmp_path / "hf").eval()
    images, text = zoo_inputs(ours.config, batch=2, seed=5)
    image, txt = hf_features(hf_model, images, text)
    with torch.no_grad():
        assert max_abs_diff(reference.encode_image(images), image) <= TOL
        assert max_abs_diff(reference.encode_text(text), txt) <= TOL
    assert max(compare(load_any(tmp_path / "hf"), reference, images, text).values()) <= TOL


def test_hf_refuses_what_clipmodel_cannot_express(tmp_path):
    reference = random_open_clip("ViT-L-14-CLIPA", seed=6, shallow=True)
    torch.save(reference.state_dict(), tmp_path / "clipa.pt")
    ours = load_any(tmp_path / "clipa.pt", config=clipforge_config("ViT-L-14-CLIPA", shallow=True))
    with pytest.raises(
        ValueError, match=r"CLIPModel cannot express .*vision.ln_pre=False.*vision.pool='avg'"
    ):
        save(ours, tmp_path / "hf", "hf")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_siglip_and_siglip2_base_full_size_match_transformers(kind, tmp_path):
    """The base models at full size (transformers' defaults: B/16, 224 px, 32000 / 256000-token vocabularies)."""
    if kind == "siglip":
        reference = transformers.SiglipModel(transformers.SiglipConfig())
    else:
        reference = transformers.Siglip2Model(
            transformers.Siglip2Config(text_config={"vocab_size": 256000}, vision_config={"num_patches": 196})
        )
    randomize_(reference.eval(), seed=7).save_pretrained(tmp_path / kind)
    ours = load_any(tmp_path / kind)
    assert (ours.config.vision.width, ours.config.vision.layers, ours.config.vision.image_size) == (
        768,
        12,
        224,
    )
    check(ours, reference, siglip2_patch=16 if kind == "siglip2" else None)
