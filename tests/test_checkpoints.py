"""clipforge's checkpoint format, safe loading, and the OpenAI / open_clip / HF converters on tiny
random models (parity with the reference implementations to 1e-5)."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from benchmarks.references import (
    compare_hf,
    compare_open_clip,
    load_hf_reference,
    max_abs_diff,
    randomize_,
    sample_inputs,
    tiny_open_clip,
    trace_open_clip,
)
from clipforge.checkpoints import (
    UnsafeCheckpointError,
    detect_format,
    load_any,
    load_checkpoint,
    load_model_file,
    save,
    save_checkpoint,
)
from clipforge.checkpoints.hf import save_hf
from clipforge.checkpoints.openai import clipforge_to_openai, infer_config, openai_to_clipforge
from clipforge.checkpoints.torchscript import read_torchscript_weights
from clipforge.models import CLIP, PRESETS, get_config
from clipforge.models.presets import CLIPFORGE_SPECS

TOL = 1e-5


def _tiny(name: str, seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return randomize_(CLIP(get_config(name)), seed).eval()


def _same_weights(a: CLIP, b: CLIP) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


class _MakesMarker:
    """A pickle payload that would create a directory when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


# --- clipforge's own format ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-resnet"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_clipforge_format_round_trip(tmp_path, name, suffix):
    model = _tiny(name)
    path = save_checkpoint(tmp_path / f"m{suffix}", model, extra={"step": 7})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m{suffix}"]  # no temp file left behind
    checkpoint = load_checkpoint(path)
    assert checkpoint.config == model.config and checkpoint.extra == {"step": 7}
    loaded = load_model_file(path)
    _same_weights(model, loaded)
    assert detect_format(path) == "clipforge"
    _same_weights(model, load_any(path))


def test_training_checkpoint_pt_keeps_optimizer_state(tmp_path):
    model = _tiny("tiny-vit")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, text = sample_inputs(model, 2)
    model(images, text).logits_per_image().sum().backward()
    optimizer.step()
    path = save_checkpoint(
        tmp_path / "train.pt", model, extra={"optimizer": optimizer.state_dict(), "epoch": 3}
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.extra["epoch"] == 3
    state = checkpoint.extra["optimizer"]["state"][0]
    assert torch.equal(state["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


# --- refusing code -------------------------------------------------------------------------


def test_malicious_torch_save_is_refused_and_payload_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _MakesMarker(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        load_any(path)
    with pytest.raises(UnsafeCheckpointError, match="refusing"):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_plain_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(_MakesMarker(marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="evil.bin"):
        load_any(path)
    assert not marker.exists()


def test_malicious_torchscript_data_pkl_is_refused(tmp_path):
    good = tmp_path / "good.pt"
    trace_open_clip(tiny_open_clip("vit"), good)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_ts.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(_MakesMarker(marker), protocol=2)
            dst.writestr(item, data)
    assert detect_format(evil) == "openai-torchscript"
    with pytest.raises(UnsafeCheckpointError, match="evil_ts.pt"):
        load_any(evil)
    assert not marker.exists()


# --- OpenAI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_openai_torchscript_matches_open_clip(tmp_path, kind):
    reference = tiny_open_clip(kind)
    path = tmp_path / "openai.pt"
    trace_open_clip(reference, path)
    assert detect_format(path) == "openai-torchscript"
    ours = load_any(path)
    assert ours.config.vision.kind == kind and ours.config.activation == "quick_gelu"
    assert ours.num_parameters() == sum(p.numel() for p in reference.parameters())
    images, text = sample_inputs(ours, 2)
    diffs = compare_open_clip(ours, reference, images, text)
    assert max(diffs.values()) <= TOL, diffs
    # Same tensors as torch.jit.load would give, without running the archive's code.
    jit_state = torch.jit.load(str(path), map_location="cpu").state_dict()
    ours_state = read_torchscript_weights(path)
    assert ours_state.keys() == jit_state.keys()
    assert all(torch.equal(ours_state[k], jit_state[k]) for k in jit_state)


def test_torchscript_reader_keeps_fp16(tmp_path):
    module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3)).half())
    module.save(str(tmp_path / "half.pt"))
    weights = read_torchscript_weights(tmp_path / "half.pt")
    assert weights["0.weight"].dtype == torch.float16
    assert torch.equal(weights["0.weight"], module.state_dict()["0.weight"])


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_openai_state_dict_save_loads_strictly_into_open_clip(tmp_path, kind):
    reference = tiny_open_clip(kind, seed=1)
    plain = tmp_path / "plain.pt"
    torch.save(reference.state_dict(), plain)
    ours = load_any(plain)
    saved = save(ours, tmp_path / "out.pt", "openai")
    fresh = tiny_open_clip(kind, seed=2)
    fresh.load_state_dict(torch.load(saved, weights_only=True), strict=True)
    images, text = sample_inputs(ours, 2, seed=3)
    assert max(compare_open_clip(ours, fresh, images, text).values()) <= TOL


# open_clip presets with clipforge's own towers: a timm or Hugging Face tower is never inferred from shapes
OPEN_CLIP_NAMES = [
    name
    for name, preset in PRESETS.items()
    if name not in CLIPFORGE_SPECS and preset.vision.kind != "timm" and preset.text.kind != "hf"
]
# presets whose tensors have the same names and shapes and that differ in more than the activation
SHAPE_TWINS = {
    "ViT-SO400M-14-SigLIP-378": ("ViT-SO400M-14-SigLIP-378", "ViT-SO400M-14-SigLIP-384"),
    "ViT-SO400M-14-SigLIP-384": ("ViT-SO400M-14-SigLIP-378", "ViT-SO400M-14-SigLIP-384"),
}


@pytest.mark.parametrize("name", OPEN_CLIP_NAMES)
def test_infer_config_recovers_every_open_clip_preset_with_the_activation_given(name, recwarn):
    with torch.device("meta"):
        model = CLIP(get_config(name))
    state_dict = clipforge_to_openai(model.state_dict())
    activation = PRESETS[name].activation
    if name in SHAPE_TWINS:  # e.g. SO400M-14 at 378 and 384 px: the same 27x27 grid, only a warning can tell
        with pytest.warns(UserWarning, match="differ in what shapes cannot show"):
            assert infer_config(state_dict, activation) in [PRESETS[n] for n in SHAPE_TWINS[name]]
        return
    assert infer_config(state_dict, activation) == PRESETS[name]  # heads (ViT-H: 16 of 80) from the preset
    other = "gelu" if activation == "quick_gelu" else "quick_gelu"
    assert infer_config(state_dict, other).activation == other  # never overridden by a shape match
    assert openai_to_clipforge(state_dict).keys() == model.state_dict().keys()
    assert not [w for w in recwarn if "head counts" in str(w.message)]


def test_infer_config_warns_when_heads_are_a_guess():
    reference = tiny_open_clip("vit", seed=0)  # shapes of no preset
    with pytest.warns(UserWarning, match="does not record its head counts.*no preset has its shapes"):
        config = infer_config(reference.state_dict(), "quick_gelu")
    assert config.vision.num_heads == 128 // 64 and config.text.heads == 128 // 64


# --- open_clip -------------------------------------------------------------------------------


def test_open_clip_training_checkpoint_with_module_prefix(tmp_path):
    reference = tiny_open_clip("vit", seed=4)
    wrapped = {
        "epoch": 5,
        "name": "run",
        "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()},
    }
    path = tmp_path / "epoch_5.pt"
    torch.save(wrapped, path)
    assert detect_format(path) == "open_clip"
    ours = load_any(path)
    images, text = sample_inputs(ours, 2)
    assert max(compare_open_clip(ours, reference, images, text).values()) <= TOL


def test_open_clip_safetensors_round_trip(tmp_path):
    import open_clip  # noqa: F401  (reference implementation)
    from safetensors.torch import load_file

    ours = load_any(_save_plain(tmp_path, tiny_open_clip("resnet", seed=5)))
    path = save(ours, tmp_path / "open_clip_model.safetensors", "open_clip")
    assert detect_format(path) == "open_clip"
    fresh = tiny_open_clip("resnet", seed=6)
    fresh.load_state_dict(load_file(path), strict=True)
    images, text = sample_inputs(ours, 2)
    assert max(compare_open_clip(ours, fresh, images, text).values()) <= TOL
    _same_weights(ours, load_any(path))


def _save_plain(tmp_path: Path, model) -> Path:
    path = tmp_path / "src.pt"
    torch.save(model.state_dict(), path)
    return path


# --- Hugging Face ----------------------------------------------------------------------------


def test_hf_directory_loads_in_transformers_and_back(tmp_path):
    ours = _tiny("tiny-vit", seed=7)
    save_hf(ours, tmp_path / "hf")
    assert {p.name for p in (tmp_path / "hf").iterdir()} == {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    }
    reference = load_hf_reference(tmp_path / "hf")
    images, text = sample_inputs(ours, 3)
    diffs = compare_hf(ours, reference, images, text)
    assert max(diffs.values()) <= TOL, diffs
    assert detect_format(tmp_path / "hf") == "hf"
    back = load_any(tmp_path / "hf")
    assert back.config == ours.config  # matched back to the preset (heads and GELU included)
    _same_weights(ours, back)


def test_hf_refuses_resnet(tmp_path):
    with pytest.raises(ValueError, match="only ViT"):
        save(_tiny("tiny-resnet"), tmp_path / "hf", "hf")


def test_openai_to_hf_to_open_clip_round_trip(tmp_path):
    """OpenAI TorchScript -> clipforge -> HF -> clipforge -> open_clip keeps outputs <= 1e-5."""
    reference = tiny_open_clip("vit", seed=8)
    trace_open_clip(reference, tmp_path / "openai.pt")
    first = load_any(tmp_path / "openai.pt")
    save(first, tmp_path / "hf", "hf")
    second = load_any(tmp_path / "hf")
    save(second, tmp_path / "oc.pt", "open_clip")
    final = tiny_open_clip("vit", seed=9)
    final.load_state_dict(torch.load(tmp_path / "oc.pt", weights_only=True), strict=True)
    images, text = sample_inputs(first, 2)
    assert max(compare_open_clip(first, final, images, text).values()) <= TOL
    assert max(compare_open_clip(second, reference, images, text).values()) <= TOL
    hf = load_hf_reference(tmp_path / "hf")
    assert max(compare_hf(first, hf, images, text).values()) <= TOL
    with torch.no_grad():
        assert max_abs_diff(first.encode_text(text), second.encode_text(text)) == 0.0


def test_unrecognised_file_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="unrecognised checkpoint"):
        load_any(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_any(tmp_path / "missing.pt")


def test_factory_loads_checkpoint_files(tmp_path):
    from clipforge.factory import create_model, load

    reference = tiny_open_clip("resnet", seed=12)
    trace_open_clip(reference, tmp_path / "openai.pt")
    model, preprocess = load(tmp_path / "openai.pt", device="cpu")
    assert preprocess.config.image_size == 64 and not model.training
    images, text = sample_inputs(model, 2)
    assert max(compare_open_clip(model, reference, images, text).values()) <= TOL
    save(model, tmp_path / "m.safetensors")
    _same_weights(model, create_model(model.config, tmp_path / "m.safetensors"))
    with pytest.raises(FileNotFoundError, match="neither a checkpoint path nor a pretrained tag"):
        create_model("RN50", "laion400m")
