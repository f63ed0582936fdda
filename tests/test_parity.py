"""Exact parity of OpenAI's nine architectures -- GELU `X` and QuickGELU `X-quickgelu` -- with open_clip and, for
ViTs, with transformers.CLIPModel through the HF converter: same random weights (and BN statistics),
encode_image / encode_text max abs diff <= 1e-4 in fp32, and equal parameter counts.
RN50 and both ViT-B-32 variants run in the fast suite; the bigger presets are marked slow, and the ~1e9-parameter
ViT-H variants run one after another in tests/test_model_naming.py to bound memory."""

from __future__ import annotations

import shutil

import pytest
import torch

from benchmarks.references import (
    clipforge_from_open_clip,
    compare_hf,
    compare_open_clip,
    load_hf_reference,
    random_open_clip,
    sample_inputs,
)
from clipforge.checkpoints.hf import save_hf
from clipforge.models import PRESETS
from clipforge.models.presets import OPENAI_NAMES

TOL = 1e-4
FAST = ("RN50", "ViT-B-32", "ViT-B-32-quickgelu")
# OpenAI's nine architectures, GELU and QuickGELU: the rest of open_clip's zoo (SigLIP's timm trunks, CLIPA, ...)
# is checked one block deep in the fast suite and at full size one model at a time by tests/test_zoo_presets.py.
OPENAI_ARCHS = sorted({name.removesuffix("-quickgelu") for name in OPENAI_NAMES.values()})
NAMES = [v for name in OPENAI_ARCHS for v in (name, f"{name}-quickgelu") if v in PRESETS]


def _marks(name: str) -> list:
    return [] if name in FAST else [pytest.mark.slow, pytest.mark.xdist_group("full_size")]


PARAMS = [pytest.param(name, marks=_marks(name), id=name) for name in NAMES]


def _param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", PARAMS)
def test_open_clip_parity(name):
    reference = random_open_clip(name, seed=0)
    ours = clipforge_from_open_clip(reference, name)
    assert ours.config == PRESETS[name]
    assert ours.num_parameters() == _param_count(reference)
    images, text = sample_inputs(ours, batch=2, seed=1)
    diffs = compare_open_clip(ours, reference, images, text)
    assert diffs["image"] <= TOL and diffs["text"] <= TOL, diffs


@pytest.mark.parametrize("name", [p for p in PARAMS if p.values[0].startswith("ViT")])
def test_hf_parity(name, tmp_path):
    reference = random_open_clip(name, seed=2)
    ours = clipforge_from_open_clip(reference, name)
    del reference
    save_hf(ours, tmp_path / "hf")
    hf_model = load_hf_reference(tmp_path / "hf")
    shutil.rmtree(tmp_path / "hf")  # up to ~1.7 GB (ViT-L): don't leave it in /tmp
    assert _param_count(hf_model) == ours.num_parameters()
    images, text = sample_inputs(ours, batch=2, seed=3)
    diffs = compare_hf(ours, hf_model, images, text)
    assert diffs["image"] <= TOL and diffs["text"] <= TOL, diffs
