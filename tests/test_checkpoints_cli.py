"""`clipforge convert` and `clipforge info`, run through the CLI dispatcher."""

from __future__ import annotations

import json

import torch

from benchmarks.references import compare_open_clip, sample_inputs, tiny_open_clip, trace_open_clip
from clipforge.checkpoints import load_any, load_model_file, save
from clipforge.cli import main as cli
from clipforge.models import CLIP, get_config


def _info(path, capsys) -> dict:
    capsys.readouterr()
    assert cli(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_convert_chain_keeps_outputs_and_info_describes_each(tmp_path, capsys):
    reference = tiny_open_clip("vit", seed=21)
    trace_open_clip(reference, tmp_path / "openai.pt")
    expected_params = sum(p.numel() for p in reference.parameters())
    info = _info(tmp_path / "openai.pt", capsys)
    assert info["format"] == "openai-torchscript" and info["params"] == expected_params
    assert info["architecture"] == "custom" and info["config"]["vision"]["patch_size"] == 8

    steps = [
        ("openai.pt", "model.safetensors", "clipforge", "clipforge"),
        ("model.safetensors", "hf", "hf", "hf"),
        ("hf", "open_clip.pt", "open_clip", "openai"),  # a bare OpenAI-layout state_dict
        ("open_clip.pt", "openai_sd.pt", "openai", "openai"),
        ("openai_sd.pt", "model.pt", "clipforge", "clipforge"),
    ]
    for src, dst, fmt, detected in steps:
        assert cli(["convert", str(tmp_path / src), str(tmp_path / dst), "--to", fmt]) == 0
        info = _info(tmp_path / dst, capsys)
        assert (info["format"], info["params"], info["dtype"]) == (detected, expected_params, "float32")
    final = load_model_file(tmp_path / "model.pt")
    images, text = sample_inputs(final, 2)
    assert max(compare_open_clip(final, reference, images, text).values()) <= 1e-5


def test_convert_fp16_and_preset_name(tmp_path, capsys):
    torch.manual_seed(0)
    model = CLIP(get_config("tiny-resnet"))
    save(model, tmp_path / "oc.pt", "open_clip")
    # open_clip files do not record heads or activation: --model names the preset
    assert cli(["convert", str(tmp_path / "oc.pt"), str(tmp_path / "half.safetensors"),
                "--to", "clipforge", "--model", "tiny-resnet", "--dtype", "fp16"]) == 0  # fmt: skip
    info = _info(tmp_path / "half.safetensors", capsys)
    assert info["architecture"] == "tiny-resnet" and info["dtype"] == "float16"
    assert info["params"] == model.num_parameters() and info["extra_keys"] == []
    half = load_any(tmp_path / "half.safetensors", dtype=None)
    assert torch.equal(half.visual.conv1.weight, model.visual.conv1.weight.half())


def test_convert_errors_are_reported(tmp_path, capsys):
    save(CLIP(get_config("tiny-resnet")), tmp_path / "rn.safetensors", "clipforge")
    assert cli(["convert", str(tmp_path / "rn.safetensors"), str(tmp_path / "hf"), "--to", "hf"]) == 1
    assert "only ViT models map to transformers.CLIPModel" in capsys.readouterr().err
    assert cli(["info", str(tmp_path / "nothing.pt")]) == 1
    assert "nothing.pt: no such checkpoint" in capsys.readouterr().err
