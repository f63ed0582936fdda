"""`clipforge train` on real labelled data (data.kind=labelled) and with the paper's other objectives."""

from __future__ import annotations

import pytest
import torch

import clipforge.recipes.experiments.objectives  # noqa: F401  (registers the comparison objectives)
from clipforge.overrides import load_config
from clipforge.train import TrainConfig, fit


def _config(shared_data, tmp_path, *extra: str) -> TrainConfig:
    return load_config(
        TrainConfig,
        None,
        [
            "data.kind=labelled",
            f"data.path={shared_data / 'cifar10' / 'test.csv'}",
            "data.batch_size=50",
            "model.name=tiny-vit",
            "model.context_length=16",
            "max_steps=4",
            "optim.warmup_steps=1",
            "log.progress=false",
            "log.plot=false",
            "device=cpu",
            f"output_dir={tmp_path}",
            *extra,
        ],
    )


def test_labelled_folder_trains_with_template_captions(shared_data, tmp_path) -> None:
    result = fit(_config(shared_data, tmp_path, 'data.templates=["a photo of a {}."]'))
    assert result["steps"] == 4
    assert result["images_seen"] == 200
    assert result["final_loss"] == pytest.approx(result["final_loss"])  # finite, not NaN


@pytest.mark.parametrize("objective", ["supervised", "bag-of-words"])
def test_other_objectives_are_selected_by_config(shared_data, tmp_path, objective) -> None:
    result = fit(_config(shared_data, tmp_path, f"loss.objective={objective}"))
    assert result["steps"] == 4 and result["final_loss"] > 0


def test_objective_needing_labels_refuses_pairs(tmp_path) -> None:
    from clipforge.data import ArrayLoader, EpochSampler, ImageCaptions, LabelledArrays

    images = torch.zeros(16, 32, 32, 3, dtype=torch.uint8)
    pairs = LabelledArrays(images, torch.full((16,), -1), [])  # image-text pairs: no class names
    captions = ImageCaptions([["a photo."]] * 16, context_length=12)
    loader = ArrayLoader(pairs, captions, EpochSampler(16, batch_size=8, drop_last=True))
    config = load_config(
        TrainConfig,
        None,
        ["loss.objective=supervised", "data.kind=custom", "data.batch_size=8", "model.context_length=12",
         "max_steps=1", f"output_dir={tmp_path}", "device=cpu"],
    )  # fmt: skip
    with pytest.raises(ValueError, match="needs labelled data"):
        fit(config, train_data=loader)


def test_unregistered_objective_names_the_registered_ones(tmp_path) -> None:
    config = load_config(TrainConfig, None, ["loss.objective=nope", "max_steps=1", f"output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="not a registered objective; registered: bag-of-words, captioning, "
                       "contrastive, sigmoid, supervised"):  # fmt: skip
        fit(config)
