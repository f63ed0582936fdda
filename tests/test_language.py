"""The caption recipes (recipes.language / recipes.frozen): caption sampling, cached towers, exact resume, demo.

Fast tests use a tiny timm trunk and a tiny random BERT on synthetic images and captions; the end-to-end demo
smoke test runs the real EfficientNet-Lite0 + MiniLM towers on real Flickr8k captions and label sets.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from clipforge.models import CLIP, CLIPConfig, VisionConfig, get_config
from clipforge.recipes.frozen import CachedTowersObjective, CaptionPairs, image_feature_cache, view_config
from clipforge.train.loader import IndexedLoader


def tiny_tower_config() -> CLIPConfig:
    bert = json.loads(get_config("lite0-minilm").text.hf_config_json)
    bert |= {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    text = dataclasses.replace(get_config("lite0-minilm").text, hf_config_json=json.dumps(bert), width=32)
    vision = VisionConfig(kind="timm", image_size=32, width=0, layers=0, timm_model_name="test_efficientnet")
    return CLIPConfig(embed_dim=16, vision=vision, text=text)


def synthetic_captions(count: int, per_image: int = 5) -> tuple[list[list[int]], torch.Tensor]:
    rows = [list(range(i * per_image, (i + 1) * per_image)) for i in range(count)]
    tokens = torch.randint(1000, 2000, (count * per_image, 8), generator=torch.Generator().manual_seed(0))
    tokens[:, 0], tokens[:, -1] = 101, 102
    return rows, tokens


def test_caption_sampling_draws_own_captions_varies_by_epoch_and_is_seeded():
    rows, tokens = synthetic_captions(64)
    pairs = CaptionPairs(torch.zeros(64, 2, 4, dtype=torch.float16), rows, tokens, seed=3)
    index = torch.arange(64)
    first, second = pairs.caption_row(index, 0), pairs.caption_row(index, 1)
    assert torch.equal(first // 5, index)  # every image gets one of its own five captions
    assert (first != second).float().mean() > 0.6  # a new draw each epoch (4/5 expected to differ)
    assert torch.equal(first, CaptionPairs(pairs.images, rows, tokens, seed=3).caption_row(index, 0))
    counts = torch.bincount(
        torch.stack([pairs.caption_row(index, e) % 5 for e in range(50)]).flatten(), minlength=5
    )
    assert counts.min() > 0.15 * counts.sum()  # all five captions used, roughly evenly
    uneven = CaptionPairs(pairs.images[:2], [[0], [1, 2, 3]], tokens, seed=0)
    draws = torch.stack([uneven.caption_row(torch.arange(2), e) for e in range(30)])
    assert set(draws[:, 0].tolist()) == {0} and set(draws[:, 1].tolist()) == {1, 2, 3}


def test_loader_resumes_mid_epoch_with_the_same_pairs():
    rows, tokens = synthetic_captions(40)
    pairs = CaptionPairs(torch.randn(40, 3, 4).half(), rows, tokens, torch.randn(200, 6).half(), seed=1)
    loader = IndexedLoader(pairs, 8, seed=1)
    full = [b for epoch in range(2) for b in loader.batches(epoch, 0)]
    resumed = list(loader.batches(0, 0))[:2] + list(loader.batches(0, 16)) + list(loader.batches(1, 0))
    assert len(full) == len(resumed) == 10
    for a, b in zip(full, resumed, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in ("index", "text", "text_features", "image_features"))


def test_cached_features_equal_the_locked_tower():
    """The cache is exact: the projection of a cached feature equals encode_image of the same view."""
    from clipforge.data.augment import augment_batch, eval_batch
    from clipforge.train.optim import lock_towers

    torch.manual_seed(0)
    model = CLIP(tiny_tower_config())
    lock_towers(model, True, True)
    images = torch.randint(0, 255, (6, 40, 40, 3), dtype=torch.uint8)
    augment = view_config(model)
    cache = image_feature_cache(model, images, 2, augment, seed=5, progress=False)
    model.eval()
    with torch.no_grad():
        plain = model.encode_image(eval_batch(images, 32, augment.mean, augment.std))
        view1 = model.encode_image(augment_batch(images, torch.arange(6), 1, 5, augment))
        torch.testing.assert_close(model.visual.project(cache[:, 0].float()), plain, atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(model.visual.project(cache[:, 1].float()), view1, atol=2e-2, rtol=2e-2)


def test_recipe_training_resumes_exactly(tmp_path):
    """Cached-towers training through clipforge.train.fit: 6 steps in one go == 3 steps, stop, resume 3."""
    from clipforge.train import fit
    from clipforge.train.config import CheckpointSection, DataSection, LogSection, ModelSection, TrainConfig
    from clipforge.train.optim import lock_towers

    rows, tokens = synthetic_captions(32)
    features = torch.randn(32, 2, CLIP(tiny_tower_config()).visual.feature_dim).half()
    text_features = torch.randn(160, 32).half()

    def run(out, max_steps, resume=None):
        torch.manual_seed(0)
        model = CLIP(tiny_tower_config())
        lock_towers(model, True, True)
        config = TrainConfig(
            model=ModelSection(lock_image=True, lock_text=True), data=DataSection(kind="custom", batch_size=8),
            checkpoint=CheckpointSection(resume=resume), log=LogSection(progress=False, plot=False),
            output_dir=str(out), epochs=2, max_steps=max_steps, device="cpu", precision="fp32",
        )  # fmt: skip
        loader = IndexedLoader(CaptionPairs(features, rows, tokens, text_features, seed=2), 8, seed=2)
        fit(config, model=model, train_data=loader, objective=CachedTowersObjective(model))
        return model

    whole = run(tmp_path / "whole", 6)
    run(tmp_path / "parts", 3)
    resumed = run(tmp_path / "parts", 6, resume="auto")
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert not torch.equal(whole.text.proj.weight, CLIP(tiny_tower_config()).text.proj.weight)


def test_raw_image_pairs_are_augmented_and_keyed():
    """A trained image tower gets uint8 images augmented per (seed, epoch, image): same batch twice, new epoch new."""
    rows, tokens = synthetic_captions(8)
    model = CLIP(get_config("flickr-resnet"))
    images = torch.randint(0, 255, (8, 48, 48, 3), dtype=torch.uint8)
    pairs = CaptionPairs(images, rows, tokens, augment=view_config(model), seed=0)
    batch = pairs.get_batch([0, 3, 5], epoch=2)
    assert batch["images"].shape == (3, 3, 64, 64) and "image_features" not in batch
    assert torch.equal(batch["images"], pairs.get_batch([0, 3, 5], epoch=2)["images"])
    assert not torch.equal(batch["images"], pairs.get_batch([0, 3, 5], epoch=3)["images"])
    loss = CachedTowersObjective(model).loss(batch)["loss"]
    assert torch.isfinite(loss) and loss > 0


@pytest.mark.slow  # ~1 min on 2 quiet cores (real towers over ~900 real images); 14 min on a loaded host
def test_caption_demo_smoke_end_to_end(shared_data, tmp_path, capsys):
    import clipforge
    from clipforge.commands.demo import main

    if not (shared_data / "flickr8k" / "captions.csv").is_file():
        pytest.fail(f"{shared_data / 'flickr8k'} missing: the caption demo needs ../shared/data/flickr8k")
    results = main(["--smoke", "--out", str(tmp_path), "--no-progress"])
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert f"results: {tmp_path / 'demo.json'}" in printed and "Flickr8k val text_to_image" in printed
    assert set(saved["zeroshot"]) == {"imagenette", "tiny-imagenet", "flowers5", "mnist", "cifar10"}
    for name, row in saved["zeroshot"].items():
        assert set(row) == {"top1", "ci95", "n", "classes", "chance"}, name
        assert row["ci95"][0] <= row["top1"] <= row["ci95"][1] and row["n"] >= 40
    assert saved["zeroshot"]["tiny-imagenet"]["classes"] == 200
    for direction in ("text_to_image", "image_to_text"):
        recalls = saved["retrieval"][direction]
        assert recalls["R@1"] <= recalls["R@5"] <= recalls["R@10"]
    assert saved["retrieval"]["text_to_image"]["R@10"] > 0.25 + 0.1  # 40 images: chance R@10 = 25%
    assert saved["train_images"] == 240 and saved["images_seen"] == saved["steps"] * 128 == 3 * 128
    assert saved["step_plan"] == "recipe" and results["checkpoint"] == saved["checkpoint"]
    model, _ = clipforge.load(saved["checkpoint"], device="cpu")
    assert model.config.text.kind == "hf" and model.config.vision.kind == "timm"
    assert int(clipforge.get_tokenizer(model)(["a dog ."])[0, 0]) == 101
