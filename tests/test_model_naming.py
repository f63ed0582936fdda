"""Names mean what they mean in open_clip, and nothing a state_dict cannot show is guessed silently.

`X` is open_clip's config (GELU), `X-quickgelu` QuickGELU, `ViT-B/32` (OpenAI's name) OpenAI's model; head counts
come from the named config (ViT-H: 16 heads of 80); a file without its activation is loaded with the activation
of the name the user gives, or with QuickGELU and a warning. Parity is on random weights, fp32."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import clipforge
from benchmarks.references import (
    compare_hf,
    compare_open_clip,
    load_hf_reference,
    randomize_,
    sample_inputs,
)
from benchmarks.zoo_reference import clipforge_config
from clipforge.checkpoints import load_any, load_pretrained, registry, save
from clipforge.models import CLIP, PRESETS, get_config
from clipforge.models.presets import CLIPFORGE_SPECS, OPEN_CLIP_SPECS, OPENAI_NAMES

open_clip = pytest.importorskip("open_clip")

TOL = 1e-4
OPEN_CLIP_NAMES = [name for name in PRESETS if name not in CLIPFORGE_SPECS]
# open_clip's own towers (not the timm-built SigLIP ones, whose shapes its config does not spell out, nor timm /
# Hugging Face towers: tests/test_zoo_presets.py checks those)
NATIVE_NAMES = [
    name
    for name in OPEN_CLIP_NAMES
    if "timm_model_name" not in open_clip.get_model_config(name)["vision_cfg"]
    and "hf_model_name" not in open_clip.get_model_config(name)["text_cfg"]
]


def _oc_config(name: str, shallow: bool) -> dict:
    cfg = json.loads(json.dumps(open_clip.get_model_config(name)))
    if shallow:  # real widths and head widths, one block per stage/tower: seconds instead of minutes
        vision = cfg["vision_cfg"]
        vision["layers"] = [1, 1, 1, 1] if isinstance(vision["layers"], list) else 1
        cfg["text_cfg"]["layers"] = 1
    return cfg


def _our_config(name: str, shallow: bool):
    config = clipforge_config(name, shallow)
    return dataclasses.replace(
        config, text=dataclasses.replace(config.text, vocab_size=get_config(name).text.vocab_size)
    )


def _random_open_clip(cfg: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize_(open_clip.CLIP(**cfg).float().eval(), seed)


def _write(model: torch.nn.Module, path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("name", NATIVE_NAMES)
def test_preset_is_open_clips_config(name):
    """Activation and head counts equal open_clip's config of the same name (the silent-mismatch bug)."""
    cfg, ours = open_clip.get_model_config(name), get_config(name)
    assert ours.activation == ("quick_gelu" if cfg.get("quick_gelu") else "gelu")
    vision = cfg["vision_cfg"]
    attention_width = vision["width"] * 32 if isinstance(vision["layers"], list) else vision["width"]
    assert ours.vision.num_heads == attention_width // vision.get("head_width", 64)
    assert ours.text.heads == cfg["text_cfg"]["heads"]
    assert ours.embed_dim == cfg["embed_dim"] and ours.vision.image_size == vision["image_size"]


def test_openai_names_are_openais_quickgelu_models():
    assert get_config("ViT-B/32") == get_config("ViT-B-32-quickgelu")
    assert get_config("ViT-B-32").activation == "gelu" and get_config("RN50").activation == "gelu"
    for openai_name, preset in OPENAI_NAMES.items():
        assert get_config(preset).activation == "quick_gelu", openai_name
    openai_entries = [entry for entry in registry.PRETRAINED.values() if entry.tag == "openai"]
    assert len(openai_entries) == 18 and all(entry.activation == "quick_gelu" for entry in openai_entries)


# Every preset at real widths, one block deep, against open_clip: tests/test_zoo_presets.py.


def test_gelu_vit_b32_file_loads_with_parity_when_named_and_warns_when_not(tmp_path):
    """The issue's case: an open_clip `ViT-B-32` (as LAION/DataComp weights are built) saved and loaded."""
    reference = randomize_(open_clip.create_model("ViT-B-32").float().eval(), seed=0)
    path = _write(reference, tmp_path / "vit_b32.pt")
    model, _ = clipforge.load(path, device="cpu", model="ViT-B-32")
    assert model.config.activation == "gelu"
    images, text = sample_inputs(model, 2, seed=1)
    assert max(compare_open_clip(model, reference, images, text).values()) <= TOL

    model, _, _ = clipforge.create_model_and_transforms("ViT-B-32", pretrained=path)
    assert max(compare_open_clip(model, reference, images, text).values()) <= TOL

    with pytest.warns(UserWarning, match="does not record its activation; assumed QuickGELU"):
        guessed, _ = clipforge.load(path, device="cpu")
    assert guessed.config == get_config("ViT-B-32-quickgelu")  # heads and preprocessing still from the preset
    assert max(compare_open_clip(guessed, reference, images, text).values()) > 1e-3  # why the warning matters


def test_vit_h_head_width_80_at_real_width(tmp_path):
    """ViT-H's 1280-wide tower has 16 heads of 80: with a shape guess of 20 heads the outputs differ."""
    name = "ViT-H-14"
    reference = _random_open_clip(_oc_config(name, shallow=True), seed=3)
    ours = load_any(_write(reference, tmp_path / "h.pt"), config=_our_config(name, shallow=True))
    assert ours.config.vision.num_heads == 16
    images, text = sample_inputs(ours, batch=2, seed=4)
    assert max(compare_open_clip(ours, reference, images, text).values()) <= TOL
    wrong = dataclasses.replace(ours.config, vision=dataclasses.replace(ours.config.vision, heads=20))
    guessed = load_any(tmp_path / "h.pt", config=wrong)
    assert compare_open_clip(guessed, reference, images, text)["image"] > 1e-3


def test_convert_to_hf_writes_the_activation(tmp_path):
    name = "ViT-B-32"
    reference = _random_open_clip(_oc_config(name, shallow=True), seed=5)
    ours = load_any(_write(reference, tmp_path / "m.pt"), config=_our_config(name, shallow=True))
    save(ours, tmp_path / "hf", "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["text_config"]["hidden_act"] == written["vision_config"]["hidden_act"] == "gelu"
    hf_model = load_hf_reference(tmp_path / "hf")
    images, text = sample_inputs(ours, batch=2, seed=6)
    assert max(compare_hf(ours, hf_model, images, text).values()) <= TOL
    assert load_any(tmp_path / "hf").config.activation == "gelu"


def test_a_tags_activation_wins_over_the_name_with_a_warning(monkeypatch, tmp_path):
    """A QuickGELU-trained tag asked for under the GELU name gets QuickGELU (open_clip only warns)."""
    config = _our_config("ViT-B-32-quickgelu", shallow=True)
    model = randomize_(CLIP(config).eval(), seed=7)
    path = save(model, tmp_path / "w.pt", "openai")
    entry = registry.PretrainedEntry("tiny-h", "qg-tag", str(path), "0" * 64, "quick_gelu")
    monkeypatch.setitem(registry.PRETRAINED, ("tiny-h", "qg-tag"), entry)
    monkeypatch.setitem(PRESETS, "tiny-h", dataclasses.replace(config, activation="gelu"))
    monkeypatch.setattr("clipforge.checkpoints.download", lambda url, sha256, offline=None: url)
    with pytest.warns(UserWarning, match="trained with quick_gelu; using quick_gelu"):
        loaded = load_pretrained("tiny-h", "qg-tag")
    assert loaded.config.activation == "quick_gelu"


@pytest.mark.slow
@pytest.mark.xdist_group("full_size")
def test_vit_h_variants_full_size_match_open_clip(tmp_path):
    """Every ViT-H variant at full size (~1e9 parameters each, run one after another to bound memory)."""
    for name in ("ViT-H-14", "ViT-H-14-quickgelu", "ViT-H-14-378", "ViT-H-14-378-quickgelu"):
        reference = randomize_(open_clip.create_model(name).float().eval(), seed=8)
        path = _write(reference, tmp_path / "h.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = load_any(path, config=name)
        Path(path).unlink()
        images, text = sample_inputs(ours, batch=1, seed=9)
        assert max(compare_open_clip(ours, reference, images, text).values()) <= TOL, name
        del reference
        save(ours, tmp_path / "hf", "hf")
        hf_model = load_hf_reference(tmp_path / "hf")
        assert max(compare_hf(ours, hf_model, images, text).values()) <= TOL, name
        del ours, hf_model
        shutil.rmtree(tmp_path / "hf")
    assert OPEN_CLIP_SPECS["ViT-H-14"]["vision"]["head_width"] == 80
