"""`experiment ... --data flickr8k`: the objectives on cached locked-trunk features and human-style captions.

A tiny synthetic fixture stands in for Flickr8k (cached features = a class prototype + noise, captions that
name the class): the real run is minutes, these are seconds. Values asserted: the bag-of-words target, the
extra vocabulary, the efficiency ratios, the probe's matching k, and that each objective learns the fixture.
"""

from __future__ import annotations

import pytest
import torch

from clipforge.recipes.experiments.caption_probe import matching_shots
from clipforge.recipes.experiments.caption_prompts import paired_gain
from clipforge.recipes.experiments.captions import CaptionSplits, FeatureSet, is_caption_data
from clipforge.recipes.experiments.objectives import image_embedding, make_objective
from clipforge.recipes.experiments.objectives_exp import pair_ratio, relative_levels
from clipforge.recipes.experiments.runs import RunSettings, chance, reported_sets, train_objective
from clipforge.recipes.flickr import CaptionedImages

WORDS = ["dog", "bicycle", "boat", "horse"]
FEATURE_DIM = 1280  # EfficientNet-Lite0's pooled features


def _features(labels: torch.Tensor, prototypes: torch.Tensor, seed: int) -> torch.Tensor:
    noise = torch.randn(len(labels), prototypes.shape[1], generator=torch.Generator().manual_seed(seed))
    return (prototypes[labels] + 0.3 * noise).half()


@pytest.fixture(scope="module")
def splits() -> CaptionSplits:
    prototypes = torch.randn(len(WORDS), FEATURE_DIM, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(64) % len(WORDS)
    views = torch.stack([_features(labels, prototypes, 1), _features(labels, prototypes, 2)], dim=1)
    captions = [[f"a {WORDS[y]} in the picture .", f"the {WORDS[y]} is here ."] for y in labels.tolist()]
    train = CaptionedImages(torch.zeros(64, 8, 8, 3, dtype=torch.uint8), captions)
    held = torch.arange(40) % len(WORDS)
    sets = {"toy": FeatureSet(_features(held, prototypes, 3), held, list(WORDS))}
    return CaptionSplits(train, views, sets, sets, sets)


def _settings(tmp_path, **changes) -> RunSettings:
    base = dict(data="flickr8k", model="lite0-small-text", epochs=12.0, batch_size=16, lr=3e-3,
                warmup_steps=2, eval_points=2, cache_dir=str(tmp_path), progress=False)  # fmt: skip
    return RunSettings(**{**base, **changes})


def test_caption_data_is_recognised_by_name():
    assert is_caption_data("flickr8k") and is_caption_data("../shared/data/flickr8k")
    assert not is_caption_data("../shared/data/cifar10")


def test_bag_of_words_target_is_exact_and_extra_vocabulary_is_scorable():
    from clipforge import tokenize
    from clipforge.models import CLIP, get_config

    torch.manual_seed(0)
    model = CLIP(get_config("lite0-small-text"))
    captions = ["a dog and a cat .", "the horse runs ."]
    objective = make_objective(
        "bag-of-words", model, [], captions, extra_vocabulary=["a photo of a submarine."]
    )
    bag = objective.word_bag(tokenize(captions, context_length=32))
    lookup = objective.lookup
    ids = tokenize(["a", "dog", "and", "cat", ".", "horse"], context_length=32)[:, 1]
    a, dog, and_, cat, stop, horse = (int(lookup[i]) for i in ids)
    assert bag[0, a] == pytest.approx(2 / 6) and bag[0, dog] == pytest.approx(1 / 6)
    assert bag[0, [and_, cat, stop]].tolist() == pytest.approx([1 / 6] * 3)
    assert bag[0].sum() == pytest.approx(1.0) and bag[0, horse] == 0
    assert bag[1, horse] == pytest.approx(1 / 4)  # "the horse runs ." : four words
    features = torch.randn(3, FEATURE_DIM)  # cached trunk features: projection only
    assert torch.equal(image_embedding(model, features), model.visual.project(features))
    scores = objective.class_scores(features, ["submarine", "dog"], ["a photo of a {}."])
    assert scores.shape == (3, 2) and torch.isfinite(scores).all()
    plain = make_objective("bag-of-words", model, [], captions)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        plain.class_scores(features, ["submarine"], ["a photo of a {}."])


def test_pair_ratio_and_relative_levels():
    fast = [{"images_seen": 0, "val_top1": 0.1}, {"images_seen": 100, "val_top1": 0.3}]
    slow = [{"images_seen": 0, "val_top1": 0.1}, {"images_seen": 400, "val_top1": 0.2}]
    got = pair_ratio(fast, slow)
    assert got["level"] == 0.2 and got["images_slow"] == 400 and got["images_fast"] == pytest.approx(50)
    assert got["ratio"] == 8.0
    flat = [{"images_seen": 0, "val_top1": 0.3}, {"images_seen": 400, "val_top1": 0.2}]
    assert pair_ratio(fast, flat)["ratio"] is None  # best at initialisation: nothing learned
    levels = relative_levels({"contrastive": fast, "bag-of-words": slow}, chance=0.1)
    assert levels == pytest.approx([0.2, 0.25, 0.28])  # half, 3/4, 0.9 of the best gain; BoW's best = half


def test_matching_shots_interpolates_in_log_k():
    curve = [(1, 0.2), (2, 0.3), (4, 0.5), (8, 0.6)]
    assert matching_shots(0.4, curve) == pytest.approx(2**1.5, abs=0.01)
    assert matching_shots(0.1, curve) == 1.0
    assert matching_shots(0.7, curve) is None


def test_paired_gain_interval_brackets_the_gain():
    base = torch.tensor([0.0, 1.0] * 50)
    better = torch.tensor([1.0, 1.0] * 50)
    got = paired_gain(better, base)
    assert got["gain"] == 0.5 and got["ci95"][0] > 0.35 and got["ci95"][1] < 0.65


@pytest.mark.parametrize("name", ["contrastive", "bag-of-words", "captioning"])
def test_each_objective_learns_the_fixture_and_is_cached(splits, tmp_path, name):
    """64 cached pairs, 48 steps: each objective's zero-shot scorer must name the class of held-out features
    (chance 0.25); a second call reuses the cached run."""
    settings = _settings(tmp_path)
    objective, record = train_objective(name, settings, splits)
    curve = [p["val_top1"] for p in record["curve"]]
    assert record["images_seen"] == 48 * 16 and len(curve) == 3
    assert curve[-1] >= 0.6, (name, curve)
    assert set(record["curve"][-1]["val_per_set"]) == {"toy"}
    again, second = train_objective(name, settings, splits)
    assert second["curve"] == record["curve"]
    state, reloaded = objective.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], reloaded[k]) for k in state)
    assert chance(splits) == 0.25 and list(reported_sets(splits)) == ["toy"]


def test_prompt_rows_and_probe_on_the_fixture(splits, tmp_path):
    """The prompts and probe experiments' per-seed code on the fixture's trained contrastive run: gains are
    the paired differences of the rows' accuracies; a 4-class, well separated set is probed near perfectly."""
    from clipforge.recipes.experiments.caption_probe import SHOTS, set_result, summarise
    from clipforge.recipes.experiments.caption_prompts import seed_rows
    from clipforge.zeroshot.templates import get_templates

    settings = _settings(tmp_path)
    rows = seed_rows(settings, splits)
    assert [r["set"] for r in rows] == ["toy", "all sets"] and rows[0]["n"] == 40
    for row in rows:
        assert row["gain_80_over_1"] == pytest.approx(row["templates_80"] - row["one_template"], abs=1e-3)
        assert row["gain_ci95"][0] <= row["gain_80_over_1"] <= row["gain_ci95"][1]
    objective, _ = train_objective("contrastive", settings, splits)
    result = set_result(objective, splits, "toy", get_templates("imagenet"), seed=0)
    assert result["zeroshot"] >= 0.6 and sorted(result["probe"]) == list(SHOTS)
    assert sum(result["probe"][16]) / 3 >= 0.9  # 10 per class available: all of them at k = 16
    row = summarise([result])[0]
    assert row["probe_16"] == pytest.approx(sum(result["probe"][16]) / 3, abs=1e-4)
    assert row["seeds_matched"] == ("1/1" if result["matching_shots"] is not None else "0/1")


@pytest.mark.parametrize("name", ["bag-of-words", "captioning"])
def test_prior_correction_cancels_on_its_own_reference(name):
    """With one reference input, the prior is that input's class scores: corrected scores are exactly 0 there;
    with a two-input reference it is the log of the mean probability (bag-of-words: of each word)."""
    from clipforge.models import CLIP, get_config

    torch.manual_seed(0)
    captions = ["a dog runs .", "a boat on the water ."]
    model = CLIP(get_config("lite0-small-text"))
    objective = make_objective(name, model, [], captions, extra_vocabulary=["a photo of a dog."]).eval()
    features = torch.randn(2, FEATURE_DIM)
    classes, templates = ["dog", "boat"], ["a photo of a {}."]
    scores = objective.class_scores(features, classes, templates)
    prior = objective.prior_scores(features[:1], classes, templates)
    assert torch.allclose(scores[0] - prior, torch.zeros(2), atol=1e-5)
    both = objective.prior_scores(features, classes, templates)
    if name == "captioning":
        assert torch.allclose(both, torch.logsumexp(scores, dim=0) - torch.log(torch.tensor(2.0)), atol=1e-5)
    else:
        from clipforge import tokenize

        names = objective.word_bag(tokenize(classes, context_length=32))
        mean = objective.word_log_probs(features).exp().mean(0)
        assert torch.allclose(both, names @ mean.log(), atol=1e-5)
