"""The caption recipes (recipes.language / recipes.frozen): caption sampling, cached towers, exact resume, demo.

Fast tests use a tiny timm trunk and a tiny random BERT on synthetic images and captions; the end-to-end demo
smoke test runs the real EfficientNet-Lite0 + MiniLM towers on real Flickr8k captions and label sets.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from clipforge.data import EpochSampler, ImageCaptions
from clipforge.models import CLIP, CLIPConfig, VisionConfig, get_config
from clipforge.recipes.frozen import CachedPairs, CachedTowersObjective, image_feature_cache, view_config


def tiny_tower_config() -> CLIPConfig:
    bert = json.loads(get_config("lite0-minilm").text.hf_config_json)
    bert |= {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    text = dataclasses.replace(get_config("lite0-minilm").text, hf_config_json=json.dumps(bert), width=32)
    vision = VisionConfig(kind="timm", image_size=32, width=0, layers=0, timm_model_name="test_efficientnet")
    return CLIPConfig(embed_dim=16, vision=vision, text=text)


def synthetic_captions(count: int, per_image: int = 5, seed: int = 0) -> ImageCaptions:
    """Image i's captions "i j" (j < per_image), tokenised as [CLS] i j [SEP] by a stand-in tokenizer."""

    def tokenizer(texts):
        ids = torch.tensor([[int(w) for w in t.split()] for t in texts])
        return torch.cat([torch.full((len(texts), 1), 101), ids + 1000, torch.full((len(texts), 1), 102)], 1)

    return ImageCaptions([[f"{i} {j}" for j in range(per_image)] for i in range(count)], seed, 4, tokenizer)


def cached_pairs(count: int, views: int = 2, batch_size: int = 8, seed: int = 1) -> CachedPairs:
    captions = synthetic_captions(count, seed=seed)
    text_features = torch.arange(count * 5, dtype=torch.float16)[:, None].expand(-1, 3)  # row number
    sampler = EpochSampler(count, seed, batch_size=batch_size, drop_last=True)
    features = torch.randn(count, views, 4, generator=torch.Generator().manual_seed(seed)).half()
    return CachedPairs(features, captions, sampler, text_features)


def test_cached_pairs_use_each_images_own_captions_once_per_cycle():
    """Image i gets its own captions (tokens and cached features of the same row), each once per 5 epochs."""
    pairs = cached_pairs(64, batch_size=16)
    seen = []
    for epoch in range(5):
        pairs.set_epoch(epoch)
        batches = list(pairs)
        assert len(batches) == pairs.batches_per_epoch == 4
        index = torch.cat([b["index"] for b in batches])
        rows = torch.cat([b["text_features"][:, 0] for b in batches]).long()
        text = torch.cat([b["text"] for b in batches])
        assert torch.equal(rows // 5, index) and torch.equal(text[:, 1] - 1000, index)
        assert torch.equal(text[:, 2] - 1000, rows % 5)
        seen.append(rows[index.argsort()])
    assert torch.equal(torch.stack(seen).sort(0).values % 5, torch.arange(5)[:, None].expand(5, 64))


def test_cached_pairs_resume_mid_epoch_with_the_same_batches():
    pairs = cached_pairs(40)
    pairs.set_epoch(0)
    full = list(pairs)
    pairs.set_epoch(0)
    head = [b for _, b in zip(range(2), pairs, strict=False)]
    state = pairs.state_dict()
    resumed = cached_pairs(40)
    resumed.load_state_dict(state)
    assert state["offset"] == 16 and len(full) == 5
    for a, b in zip(full, head + list(resumed), strict=True):
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
        sampler = EpochSampler(32, 2, batch_size=8, drop_last=True)
        loader = CachedPairs(features, synthetic_captions(32, seed=2), sampler, text_features)
        fit(config, model=model, train_data=loader, objective=CachedTowersObjective(model))
        return model

    whole = run(tmp_path / "whole", 6)
    run(tmp_path / "parts", 3)
    resumed = run(tmp_path / "parts", 6, resume="auto")
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert not torch.equal(whole.text.proj.weight, CLIP(tiny_tower_config()).text.proj.weight)


def test_trained_image_tower_gets_augmented_raw_images():
    """recipe (a): the library's ArrayLoader over uint8 images + sampled captions; the objective takes them."""
    from clipforge.recipes.flickr import CaptionedImages
    from clipforge.recipes.language import RECIPES, training_data

    recipe = dataclasses.replace(RECIPES["scratch"], batch_size=4, progress=False)
    model = CLIP(get_config(recipe.model))
    images = torch.randint(0, 255, (8, 48, 48, 3), dtype=torch.uint8)
    loader = training_data(model, recipe, CaptionedImages(images, [[f"a photo {i} ."] for i in range(8)]))
    loader.set_epoch(2)
    batch = next(iter(loader))
    assert batch["images"].shape == (4, 3, 64, 64) and batch["text"].shape == (4, model.context_length)
    assert torch.equal(batch["images"], loader.make_batch(batch["index"], 2)["images"])
    assert not torch.equal(batch["images"], loader.make_batch(batch["index"], 3)["images"])
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


def test_locked_tower_paths_equal_plain_pytorch():
    """Length-sorted caption caching and the onnxruntime eval path give the towers' own outputs, row by row."""
    from clipforge.data.augment import eval_batch
    from clipforge.recipes.frozen import text_feature_cache
    from clipforge.recipes.unseen import encode_arrays
    from clipforge.train.optim import lock_towers

    torch.manual_seed(0)
    model = CLIP(tiny_tower_config()).eval()
    lock_towers(model, True, True)
    tokens = torch.zeros(7, 9, dtype=torch.long)
    for row, length in enumerate([9, 3, 6, 2, 9, 4, 5]):  # ragged: batches of 3 mix lengths unless sorted
        tokens[row, :length] = torch.randint(1000, 2000, (length,))
    cached = text_feature_cache(model, tokens, batch_size=3, progress=False)
    with torch.no_grad():
        one_by_one = torch.cat([model.text.features(tokens[i : i + 1]) for i in range(7)])
    torch.testing.assert_close(cached.float(), one_by_one, atol=2e-3, rtol=2e-3)
    images = torch.randint(0, 255, (5, 40, 40, 3), dtype=torch.uint8)
    pre = model.config.preprocess
    with torch.no_grad():
        expected = model.encode_image(eval_batch(images, pre.image_size, pre.mean, pre.std), normalize=True)
    torch.testing.assert_close(encode_arrays(model, images), expected, atol=5e-3, rtol=5e-3)


def test_first_captions_keeps_images_and_caption_order():
    from clipforge.recipes.flickr import CaptionedImages

    data = CaptionedImages(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), [["a", "b", "c"], ["d"]])
    fewer = data.first_captions(2)
    assert fewer.captions == [["a", "b"], ["d"]] and fewer.flat_captions == ["a", "b", "d"]
    assert fewer.caption_image.tolist() == [0, 0, 1] and fewer.images is data.images
    with pytest.raises(ValueError, match="count must be >= 1"):
        data.first_captions(0)


class _SteppingClock:
    """A budget clock that advances `step_s` seconds every time it is read (a slow machine, deterministically)."""

    kind = "wall"

    def __init__(self, step_s: float):
        self.step_s, self.t = step_s, 0.0

    def spent(self) -> float:
        self.t += self.step_s
        return self.t

    now = spent


def test_cached_views_stop_where_the_budget_ends_and_keep_a_prefix():
    from clipforge.recipes.language import LanguageRecipe, cached_views
    from clipforge.train.optim import lock_towers

    torch.manual_seed(0)
    model = CLIP(tiny_tower_config()).eval()
    lock_towers(model, True, True)
    images = torch.randint(0, 255, (6, 40, 40, 3), dtype=torch.uint8)
    augment = view_config(model)
    recipe = LanguageRecipe(image_views=4, minutes=None, progress=False, seed=3)
    everything = image_feature_cache(model, images, 4, augment, seed=3, progress=False)
    unbounded = cached_views(model, images, recipe, augment, _SteppingClock(100.0), eval_images=0)
    assert torch.equal(unbounded, everything)  # no budget: all four views, the same keys as one call
    # 33 s budget, 0.8 of it = 26.4 s; view 0 costs 5 s and the clock then reads 15 s: 11.4 s = 2 more views
    tight = dataclasses.replace(recipe, minutes=0.55)
    with pytest.warns(UserWarning, match="caching 2 of 3 extra image views"):
        shortened = cached_views(model, images, tight, augment, _SteppingClock(5.0), eval_images=0)
    assert shortened.shape[1] == 3 and torch.equal(shortened, everything[:, :3])
    with pytest.warns(UserWarning, match="caching 0 of 3"):  # the evaluation's reserve leaves no room
        only_first = cached_views(model, images, tight, augment, _SteppingClock(5.0), eval_images=60)
    assert torch.equal(only_first, everything[:, :1])


def test_pretrained_recipe_keeps_minilms_own_space():
    """Recipe (c) has no text projection: a caption's embedding is MiniLM's pooled sentence embedding, so
    words Flickr8k never shows keep MiniLM's meaning; only the image side learns a map (1280 -> 384)."""
    from clipforge.recipes.language import RECIPES

    config = get_config(RECIPES["pretrained"].model)
    assert config.embed_dim == config.text.width == 384 and config.vision.image_size == 224
    model = CLIP(config).eval()
    assert [n for n, _ in model.named_parameters() if "proj" in n] == ["visual.head.proj.weight"]
    features = torch.randn(3, 384)
    assert torch.equal(model.text.project(features), features)
    assert RECIPES["pretrained"].image_views == 3 and RECIPES["pretrained"].captions_per_image is None
