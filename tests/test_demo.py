"""`clipforge demo --smoke`: the whole pipeline on ~2,000 real CIFAR-10 images, with values checked."""

from __future__ import annotations

import json

import pytest
import torch

from clipforge.models import get_config
from clipforge.recipes.demo import retrieval_metrics


def test_retrieval_metrics_perfect_and_reversed():
    labels = torch.tensor([0, 0, 1, 1])
    embeddings = torch.eye(2)[labels]  # (4, 2): each image on its class axis
    perfect = retrieval_metrics(torch.eye(2), embeddings, labels)
    assert perfect == {"retrieval_precision@2": 1.0, "retrieval_map": 1.0}
    wrong = retrieval_metrics(torch.eye(2)[:, [1, 0]], embeddings, labels)
    assert wrong["retrieval_precision@2"] == 0.0
    assert wrong["retrieval_map"] == pytest.approx((1 / 3 + 2 / 4) / 2)


@pytest.mark.slow  # ~2 min on 2 quiet cores (training ~4,000 pairs, evaluation, linear probe)
def test_demo_smoke_end_to_end(shared_data, tmp_path, capsys):
    from clipforge.checkpoints.io import load_model_file
    from clipforge.commands.demo import main

    cifar = shared_data / "cifar10"
    if not (cifar / "train.csv").is_file():
        pytest.skip(f"{cifar} not present")
    results = main(
        [
            "--recipe",
            "cifar10",
            "--smoke",
            "--data",
            str(cifar),
            "--test-data",
            str(cifar),
            "--out",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    json_path = tmp_path / "demo.json"
    assert f"results: {json_path}" in printed
    saved = json.loads(json_path.read_text())
    for key in ("zeroshot_top1", "images_seen", "wall_time_s", "checkpoint", "linear_probe_top1", "curve"):
        assert key in saved, key
    assert saved["test_images"] == 1000 and saved["train_images"] == 2304 - 256
    assert saved["images_seen"] == saved["steps"] * 64 == 2 * (2048 // 64) * 64
    assert saved["wall_time_s"] >= saved["train_wall_time_s"] > 0
    # chance is 10%: a couple of epochs on 2,048 images already learns something real
    assert saved["zeroshot_top1"] > 0.2, saved["zeroshot_top1"]
    assert saved["linear_probe_top1"] > 0.15, saved["linear_probe_top1"]
    assert saved["retrieval_map"] > 0.15, saved["retrieval_map"]
    assert [p["images_seen"] for p in saved["curve"]] == [0, 2048, 4096]  # eval_points=2
    assert (tmp_path / "demo_curve.png").stat().st_size > 1000
    # the checkpoint is an ordinary clipforge model file: it reloads to the same weights
    model = load_model_file(saved["checkpoint"])
    assert model.config == get_config("demo-cifar")
    images = torch.randn(2, 3, 32, 32)
    assert results["zeroshot_top1"] == saved["zeroshot_top1"]
    assert model.encode_image(images).shape == (2, 128)


def test_shards_without_test_split_are_refused(shared_data):
    """WebDataset training shards have no test split: evaluating on them would score training images."""
    from clipforge.recipes.demo import DemoConfig, load_data

    shards = shared_data / "cifar10-wds"
    if not shards.is_dir():
        pytest.skip(f"{shards} not present")
    with pytest.raises(ValueError, match="no separate test split"):
        load_data(DemoConfig(data=str(shards), test_data=None, progress=False))
