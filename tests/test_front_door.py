"""One way to get a model: `load_model` behind every front door, one device default, one version string."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge import factory
from clipforge.device import DEFAULT_DEVICE, resolve_device
from clipforge.transforms import Preprocess

REPO = Path(__file__).resolve().parents[1]


def test_every_front_door_defaults_to_auto():
    doors = [factory.load_model, factory.create_model, factory.create_model_and_transforms, factory.load]
    assert DEFAULT_DEVICE == "auto"
    for door in doors:
        assert inspect.signature(door).parameters["device"].default == DEFAULT_DEVICE, door.__name__


@pytest.mark.parametrize("command", ["classify", "embed", "search", "serve", "eval"])
def test_every_command_defaults_to_auto(command):
    import importlib

    module = importlib.import_module(f"clipforge.commands.{command}")
    argv = {
        "classify": ["x.jpg", "--labels", "a,b"],
        "embed": ["src", "--out", "o"],
        "search": ["index", "--text", "t"],
        "serve": [],
        "eval": ["zeroshot"],
    }[command]
    parser = module.build_parser()
    assert parser.parse_args(argv).device == "auto"


def test_auto_means_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") == resolve_device(None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_load_model_reads_presets_checkpoints_and_home_paths(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, preprocess = clipforge.load_model("tiny-vit", device="cpu")
    assert not model.training and isinstance(preprocess, Preprocess)
    assert preprocess.config == model.config.preprocess
    from clipforge.checkpoints import save

    monkeypatch.setenv("HOME", str(tmp_path))
    save(model, tmp_path / "m.safetensors")
    for spec in ("~/m.safetensors", tmp_path / "m.safetensors"):
        again, _ = clipforge.load_model(spec, device="cpu")
        assert all(
            torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values())
        )
    weights, _ = clipforge.load_model("tiny-vit", "~/m.safetensors", device="cpu")  # preset + weights file
    assert torch.equal(weights.logit_scale, model.logit_scale)
    assert clipforge.load("~/m.safetensors", device="cpu")[0].config == model.config
    assert clipforge.create_model("tiny-vit", "~/m.safetensors", device="cpu").config == model.config

    with pytest.raises(FileNotFoundError, match="no-such.pt: no such checkpoint"):
        clipforge.load_model("no-such.pt")
    with pytest.raises(KeyError, match="unknown model 'no-such-preset'; available: .*tiny-vit"):
        clipforge.load_model("no-such-preset")
    with pytest.raises(ValueError, match="applies to preset names only"):
        clipforge.load_model(tmp_path / "m.safetensors", "openai")


def test_commands_check_the_checkpoint_flag(tmp_path):
    from clipforge.commands.classify import build_parser
    from clipforge.commands.options import model_spec

    args = build_parser().parse_args(["x.jpg", "--labels", "a,b", "--checkpoint", str(tmp_path / "gone.pt")])
    with pytest.raises(FileNotFoundError, match="--checkpoint .*gone.pt: no such file"):
        model_spec(args)
    args = build_parser().parse_args(
        ["x.jpg", "--labels", "a,b", "--model", "tiny-vit", "--pretrained", "openai"]
    )
    assert model_spec(args) == ("tiny-vit", "openai")


def test_one_version_string():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "clipforge.__version__"}
    from clipforge.cli import main

    assert main(["--version"]) == 0
    assert (REPO / "src" / "clipforge" / "py.typed").is_file()  # declared in package-data
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["clipforge"]
