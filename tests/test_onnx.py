"""ONNX export: onnxruntime equals PyTorch (<= 1e-4) at several batch sizes; int8 keeps zero-shot accuracy."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import clipforge  # noqa: E402
from clipforge.apps.onnx_export import OnnxCLIP, export_towers, max_abs_diff  # noqa: E402


@pytest.mark.parametrize("preset", ["tiny-vit", "tiny-resnet"])
def test_onnx_towers_match_pytorch_with_dynamic_batch(preset, tmp_path):
    torch.manual_seed(0)
    model = clipforge.create_model(preset)
    paths = export_towers(model, tmp_path)
    assert model.text.trim_to_longest  # the caller's model is not changed by the export
    runtime = OnnxCLIP(paths["image"], paths["text"])
    size = model.config.preprocess.image_size
    texts = ["a", "a photo of a dog.", "x y z", "a much longer caption about a red bicycle by a wall", "cat"]
    for batch in (1, 3, 5):
        diff = max_abs_diff(
            model, runtime, torch.randn(batch, 3, size, size), clipforge.tokenize(texts[:batch])
        )
        assert diff["image"] <= 1e-4 and diff["text"] <= 1e-4, (batch, diff)
    info = json.loads(paths["info"].read_text())
    assert info["context_length"] == 77 and info["logit_scale"] == pytest.approx(
        model.logit_scale.exp().item()
    )


def test_export_cli_int8_reports_zero_shot_change(shared_data, tmp_path_factory, tmp_path):
    from test_apps_helpers import cached_tiny_clip

    from clipforge.checkpoints import save
    from clipforge.commands.export_onnx import main

    model = cached_tiny_clip(shared_data, tmp_path_factory.getbasetemp().parent)
    checkpoint = save(model, tmp_path / "tiny.pt")
    out = tmp_path / "onnx"
    result = main(
        [
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--int8",
            "--eval-data",
            str(shared_data / "cifar10"),
        ]
    )
    fp32, int8 = result["rows"]
    assert result["eval"]["images"] == 1000
    assert fp32["zeroshot_top1"] >= 0.2  # chance is 0.1
    assert abs(result["int8_top1_change"]) <= 0.05  # int8 weights cost at most 5 points
    assert int8["image_MB"] < fp32["image_MB"] / 2  # matmul weights really are int8
    assert max(result["max_abs_diff"].values()) <= 1e-4
    assert (out / "export_onnx.json").is_file() and (out / "export_onnx.md").is_file()
