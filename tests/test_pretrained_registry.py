"""The pretrained registry is open_clip's table as data: every (architecture, tag) pair, with its download
source, published SHA256, activation and preprocessing; the committed file must not drift from open_clip's
table, and a tag's preprocessing must reach the model's config and transforms (open_clip's merge)."""

from __future__ import annotations

import json
import os
from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from benchmarks.pretrained_table import open_clip_rows, published_sha256
from benchmarks.references import randomize_
from clipforge.checkpoints import load_pretrained, registry, save
from clipforge.models import CLIP, PRESETS, PreprocessConfig, get_config

open_clip = pytest.importorskip("open_clip")

ENTRIES = list(registry.PRETRAINED.values())


def test_committed_registry_equals_open_clips_table():
    """Drift check: regenerate with `python -m benchmarks.pretrained_table` when open_clip's table changes."""
    committed = json.loads(resources.files("clipforge.checkpoints").joinpath("pretrained.json").read_text())
    assert committed["entries"] == open_clip_rows()
    assert set(registry.list_pretrained()) == set(open_clip.list_pretrained())
    assert len(ENTRIES) == len(open_clip.list_pretrained()) >= 196


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e.model}:{e.tag}" for e in ENTRIES])
def test_entry_is_what_open_clip_would_load(entry):
    cfg = open_clip.pretrained.get_pretrained_cfg(entry.model, entry.tag)
    model_cfg = open_clip.get_model_config(entry.model)
    quick_gelu = cfg.get(
        "quick_gelu", model_cfg.get("quick_gelu", False)
    )  # the tag's flag, else the config's
    assert (entry.url, entry.activation) == (cfg["url"], "quick_gelu" if quick_gelu else "gelu")
    assert (entry.hf_hub, entry.hf_file) == os.path.split(
        cfg["hf_hub"]
    )  # open_clip's split of 'org/name/file'
    assert entry.source in ("url", "hf_hub")
    assert entry.sha256 == published_sha256(entry.url)
    if entry.url.startswith("https://openaipublic"):
        assert len(entry.sha256) == 64 and f"/{entry.sha256}/" in entry.url
    if entry.model.endswith("-quickgelu"):
        assert entry.activation == "quick_gelu"
    pre = entry.preprocess
    assert (pre.mean, pre.std, pre.interpolation, pre.resize_mode) == (
        tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"], cfg["resize_mode"],
    )  # fmt: skip
    assert pre.image_size == model_cfg["vision_cfg"]["image_size"]
    if entry.model in PRESETS:  # the preset builds the architecture the tag was trained on
        assert get_config(entry.model).vision.image_size == pre.image_size


def test_published_hash_prefixes():
    url = "https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/rn50-quickgelu-cc12m-f000538c.pt"
    assert published_sha256(url) == "f000538c"
    assert published_sha256("https://dl.fbaipublicfiles.com/MMPT/metaclip/b32_400m.pt") == ""
    assert registry.get_pretrained("RN50", "cc12m").source == "url"  # a hash is published: the URL, checked
    assert (
        registry.get_pretrained("ViT-B-32", "metaclip_400m").source == "hf_hub"
    )  # none: the Hub (LFS SHA256)
    assert (
        registry.get_pretrained("ViT-B-32", "LAION2B-s34B-b79K").tag == "laion2b_s34b_b79k"
    )  # open_clip's spelling


def _served(monkeypatch, path) -> None:
    monkeypatch.setattr("clipforge.checkpoints.download", lambda url, sha256, offline=None: path)


def test_a_tags_preprocessing_reaches_config_and_transforms(monkeypatch, tmp_path):
    """open_clip's merge_preprocess_dict: the tag's mean/std/interpolation/resize mode win over the preset's,
    the image size is the model's; the eval transform then equals open_clip's for the same preprocessing."""
    weights = save(randomize_(CLIP(get_config("tiny-vit")).eval(), seed=1), tmp_path / "w.pt", "openai")
    tag_pre = PreprocessConfig(224, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), "bilinear", "squash")
    entry = registry.PretrainedEntry(
        "tiny-vit", "squashed", "http://x/w.pt", "0" * 64, "gelu", preprocess=tag_pre
    )
    monkeypatch.setitem(registry.PRETRAINED, ("tiny-vit", "squashed"), entry)
    _served(monkeypatch, weights)
    model, train, evaluate = clipforge.create_model_and_transforms("tiny-vit", pretrained="squashed")
    expected = PreprocessConfig(32, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), "bilinear", "squash")
    assert model.config.preprocess == train.config == evaluate.config == expected
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(
        size=32, mean=expected.mean, std=expected.std, interpolation="bilinear", resize_mode="squash"
    )
    theirs = image_transform_v2(cfg, is_train=False)
    pixels = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)  # not square: squashed
    image = Image.fromarray(pixels)
    assert torch.equal(evaluate(image), theirs(image))
    assert evaluate(image).shape == (3, 32, 32)


def test_an_architecture_without_a_preset_is_named(monkeypatch):
    """Entries for architectures clipforge cannot build yet are valid data; loading one says which is missing."""
    entry = registry.PretrainedEntry("ViT-Future-99", "webli", "", "", "gelu", hf_hub="org/future")
    monkeypatch.setitem(registry.PRETRAINED, ("ViT-Future-99", "webli"), entry)
    for load in (lambda: load_pretrained("ViT-Future-99", "webli"),
                 lambda: clipforge.create_model("ViT-Future-99", pretrained="webli")):  # fmt: skip
        with pytest.raises(KeyError, match="cannot build the 'ViT-Future-99' architecture yet"):
            load()
    missing = sorted({e.model for e in ENTRIES if e.model not in PRESETS})
    for name in missing[:3]:  # real ones, as long as some remain
        tag = registry.tags_for(name)[0]
        with pytest.raises(KeyError, match=f"cannot build the {name!r} architecture"):
            load_pretrained(name, tag)
    with pytest.raises(FileNotFoundError, match="tags: openai, yfcc15m, cc12m"):
        load_pretrained("RN50", "laion9000")


def test_models_command_lists_the_registry(capsys):
    from clipforge.commands.models import main

    rows = main(["--pretrained", "--json"])["pretrained"]
    assert len(rows) == len(ENTRIES) and json.loads(capsys.readouterr().out) == rows
    assert {"model": "RN50", "tag": "cc12m", "source": "url", "sha256": "f000538c"}.items() <= rows[2].items()
    assert sum(row["buildable"] for row in rows) == sum(entry.model in PRESETS for entry in ENTRIES) > 0


def test_a_bad_row_names_itself():
    row = json.loads(resources.files("clipforge.checkpoints").joinpath("pretrained.json").read_text())[
        "entries"
    ][0]
    assert registry.entry_from_row(row) == registry.PRETRAINED[("RN50", "openai")]
    with pytest.raises(ValueError, match=r"pretrained.json: RN50:openai: bad entry .*resize_mode='crop'"):
        registry.entry_from_row({**row, "preprocess": {**row["preprocess"], "resize_mode": "crop"}})
    with pytest.raises(ValueError, match="RN50:openai: bad entry"):
        registry.entry_from_row({**row, "licence": "MIT"})
