"""Ecosystem towers: timm image trunks and Hugging Face text encoders inside clipforge's CLIP.

Parity with the packages' own architectures (efficientnet_lite_pytorch, transformers' BertModel), exact
save/load round trips, the model's own tokenizer on every path, and lock freezing exactly what it says.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import clipforge
from clipforge.checkpoints import load_any, save_checkpoint
from clipforge.checkpoints.efficientnet_pytorch import efficientnet_pytorch_to_timm
from clipforge.checkpoints.towers import hf_text_config, load_image_tower, load_text_tower
from clipforge.local_weights import resolve_weights
from clipforge.models import CLIP, CLIPConfig, TextConfig, VisionConfig, get_config
from clipforge.models.tower_presets import MINILM_L6_CONFIG_JSON
from clipforge.train.optim import build_optimizer, keep_locked_in_eval, lock_towers

LITE0 = "tf_efficientnet_lite0"


def lite0_config(size: int, embed_dim: int, proj: str = "linear") -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(
            kind="timm", image_size=size, width=1280, layers=0, timm_model_name=LITE0, timm_proj=proj
        ),
        text=TextConfig(context_length=8, width=32, heads=1, layers=1),
    )


@pytest.fixture(scope="module")
def lite0_reference():
    from efficientnet_lite_pytorch import EfficientNet

    path = resolve_weights("efficientnet-lite0")
    return {size: EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path), image_size=size).eval()
            for size in (128, 224)}  # fmt: skip


@pytest.mark.parametrize("size", [128, 224])
def test_timm_lite0_matches_the_package_architecture(lite0_reference, size):
    """ImageNet logits (timm_proj='none' keeps timm's classifier) and pooled features, pretrained weights."""
    reference = lite0_reference[size]
    torch.manual_seed(0)
    images = torch.randn(3, 3, size, size)
    logits_model = CLIP(lite0_config(size, 1000, proj="none")).eval()
    load_image_tower(logits_model, "efficientnet-lite0")
    features_model = CLIP(lite0_config(size, 64)).eval()
    load_image_tower(features_model, "efficientnet-lite0")
    with torch.no_grad():
        torch.testing.assert_close(logits_model.visual(images), reference(images), atol=1e-5, rtol=1e-5)
        expected = reference.extract_features(images).mean(dim=(2, 3))
        torch.testing.assert_close(features_model.visual.features(images), expected, atol=1e-5, rtol=1e-5)
        assert features_model.encode_image(images).shape == (3, 64)


def test_efficientnet_converter_on_random_weights():
    """Every tensor renamed, values untouched: a randomly initialised package model equals timm's."""
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(1)
    reference = EfficientNet.from_name("efficientnet-lite0", image_size=96).eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model = CLIP(lite0_config(96, 1000, proj="none")).eval()
    converted = efficientnet_pytorch_to_timm(reference.state_dict(), model.visual.trunk)
    assert set(converted) == set(model.visual.trunk.state_dict())
    model.visual.trunk.load_state_dict(converted)
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.visual(images), reference(images), atol=1e-5, rtol=1e-5)


def test_wrong_weights_name_the_problem(tmp_path):
    model = CLIP(lite0_config(64, 16))
    torch.save({"conv_stem.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth.*missing"):
        load_image_tower(model, tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="known local weights name"):
        load_image_tower(model, "no-such-tower")


def test_minilm_text_tower_matches_transformers():
    """Mean-pooled MiniLM states equal transformers' BertModel on the same ids; ids equal its tokenizer's."""
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_weights("all-MiniLM-L6-v2")
    model = CLIP(get_config("lite0-minilm")).eval()
    load_text_tower(model, "all-MiniLM-L6-v2")
    texts = ["A dog runs along the beach .", "Two children , playing in a FOUNTAIN !", "café " * 40]
    tokens = clipforge.get_tokenizer(model)(texts)
    reference_tokenizer = AutoTokenizer.from_pretrained(str(folder))
    expected_ids = reference_tokenizer(
        texts, padding="max_length", truncation=True, max_length=32, return_tensors="pt"
    )
    assert torch.equal(tokens, expected_ids["input_ids"])
    reference = AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        mask = expected_ids["attention_mask"]
        hidden = reference(input_ids=tokens, attention_mask=mask).last_hidden_state
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(model.text.features(tokens), expected, atol=1e-5, rtol=1e-4)


def test_hf_text_config_from_folder_matches_the_preset():
    config = hf_text_config("all-MiniLM-L6-v2", context_length=32)
    assert config == get_config("lite0-minilm").text
    assert json.loads(config.hf_config_json)["hidden_size"] == 384


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_load_round_trip_is_exact(tmp_path, suffix):
    torch.manual_seed(0)
    model = CLIP(get_config("lite0-minilm")).eval()
    load_image_tower(model, "efficientnet-lite0")
    load_text_tower(model, "all-MiniLM-L6-v2")
    path = save_checkpoint(tmp_path / f"model{suffix}", model)
    loaded, preprocess = clipforge.load(path, device="cpu")
    assert loaded.config == model.config and loaded.config.preprocess.mean == (0.5, 0.5, 0.5)
    images = torch.randn(2, 3, 128, 128)
    tokens = clipforge.get_tokenizer(loaded)(["a dog runs .", "two kids play"])
    assert int(tokens[0, 0]) == 101  # BERT's [CLS], not CLIP's start-of-text
    with torch.no_grad():
        for a, b in ((model(images, tokens), loaded(images, tokens)),):
            assert torch.equal(a.image_features, b.image_features)
            assert torch.equal(a.text_features, b.text_features)
    again = load_any(path)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_zero_shot_paths_use_the_models_tokenizer():
    from clipforge.zeroshot.classifier import build_classifier, model_tokenizer

    model = CLIP(get_config("lite0-minilm")).eval()
    assert model_tokenizer(model) is clipforge.get_tokenizer(model)
    weights = build_classifier(model, ["dog", "cat"], ["a photo of a {}."], cache_dir=False, progress=False)
    tokens = clipforge.get_tokenizer(model)(["a photo of a dog.", "a photo of a cat."])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1).T
    torch.testing.assert_close(weights, expected, atol=1e-5, rtol=1e-5)


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


def test_lock_image_freezes_the_trunk_and_keeps_it_in_eval():
    model = CLIP(lite0_config(64, 16))
    lock_towers(model, lock_image=True, lock_text=False)
    names = trainable_names(model)
    assert not any(n.startswith("visual.trunk.") for n in names)
    assert "visual.head.proj.weight" in names and any(n.startswith("text.") for n in names)
    model.train()
    keep_locked_in_eval(model, True, False)
    assert not model.visual.trunk.training and model.visual.head.training
    before = {k: v.clone() for k, v in model.visual.trunk.state_dict().items()}
    optimizer = build_optimizer(model, 1e-2, 0.1, (0.9, 0.98), 1e-6)
    output = model(torch.randn(4, 3, 64, 64), clipforge.tokenize(["a", "b", "c", "d"], context_length=8))
    (output.image_features @ output.text_features.T).trace().neg().backward()
    optimizer.step()
    after = model.visual.trunk.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics


def test_lock_image_unlocked_groups_trains_exactly_the_last_groups():
    from timm.models import group_parameters

    model = CLIP(lite0_config(64, 16))
    lock_towers(model, lock_image=True, lock_text=False, image_unlocked_groups=2)
    groups = group_parameters(model.visual.trunk, model.visual.trunk.group_matcher())
    expected = {f"visual.trunk.{n}" for gid in sorted(groups)[-2:] for n in groups[gid]}
    assert {n for n in trainable_names(model) if n.startswith("visual.trunk.")} == expected
    assert "visual.trunk.conv_head.weight" in expected and "visual.trunk.conv_stem.weight" not in expected
    model.train()
    keep_locked_in_eval(model, True, False)
    assert not model.visual.trunk.conv_stem.training and model.visual.trunk.blocks[6].training


def test_lock_text_unlocked_layers():
    model = CLIP(get_config("lite0-minilm"))
    lock_towers(model, lock_image=False, lock_text=True, text_unlocked_layers=1)
    text_names = {n for n in trainable_names(model) if n.startswith("text.")}
    assert text_names and all(
        n.startswith(("text.transformer.encoder.layer.5.", "text.proj.")) for n in text_names
    )
    assert "text.proj.weight" in text_names
    assert not any("LayerNorm" in n for n in text_names if "layer.5" not in n)
    lock_towers(model, lock_image=False, lock_text=True)
    assert trainable_names(model) & {n for n, _ in model.text.named_parameters(prefix="text")} == {
        "text.proj.weight"
    }


def test_partial_unlock_of_clipforge_towers_is_an_error():
    model = CLIP(get_config("tiny-vit"))
    with pytest.raises(ValueError, match="partial unlocking"):
        lock_towers(model, lock_image=True, lock_text=False, image_unlocked_groups=1)


def test_clipforge_train_with_tower_keys(tmp_path, monkeypatch):
    """`clipforge train` config keys: pretrained towers loaded, image tower locked, one short run."""
    from clipforge.models.config import PRESETS
    from clipforge.overrides import load_config
    from clipforge.train import fit
    from clipforge.train.config import TrainConfig

    tiny_bert = json.loads(MINILM_L6_CONFIG_JSON) | {"hidden_size": 32, "num_hidden_layers": 2,
                                                      "num_attention_heads": 2, "intermediate_size": 64}  # fmt: skip
    text = dataclasses.replace(
        get_config("lite0-minilm").text, hf_config_json=json.dumps(tiny_bert), width=32
    )
    config = dataclasses.replace(lite0_config(32, 16), text=text)
    monkeypatch.setitem(PRESETS, "test-towers", config)
    donor = CLIP(config)
    torch.nn.init.constant_(donor.visual.trunk.conv_stem.weight, 0.01)
    torch.save(donor.visual.trunk.state_dict(), tmp_path / "trunk.pth")
    donor.text.transformer.save_pretrained(tmp_path / "bert")
    overrides = [
        "model.name=test-towers", f"model.image_tower={tmp_path / 'trunk.pth'}", f"model.text_tower={tmp_path / 'bert'}",
        "model.lock_image=true", "data.kind=synthetic", "data.num_samples=16", "data.batch_size=8",
        "log.progress=false", "log.plot=false", f"output_dir={tmp_path / 'run'}", "device=cpu",
    ]  # fmt: skip
    results = fit(load_config(TrainConfig, None, overrides))
    assert results["steps"] == 2 and results["final_loss"] > 0
    trained = load_any(_export(results, tmp_path))
    assert torch.equal(trained.visual.trunk.conv_stem.weight, donor.visual.trunk.conv_stem.weight)  # locked
    assert not torch.equal(trained.text.proj.weight, donor.text.proj.weight)  # trained


def _export(results: dict, tmp_path) -> str:
    from clipforge.train.state import load_state

    state = load_state(results["checkpoint"])
    config = CLIPConfig.from_dict(state["model_config"])
    return str(save_checkpoint(tmp_path / "trained.safetensors", state["model"], config))
