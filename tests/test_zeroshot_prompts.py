"""Prompts as data: the paper's templates and class names, and the shift sets' class-subset maps."""

from __future__ import annotations

import pytest

from clipforge.zeroshot.classnames import (
    get_classname_synonyms,
    get_classnames,
    imagenet_wnids,
    objectnet_classes,
    subset_indices,
)
from clipforge.zeroshot.templates import get_templates, list_template_sets


def test_imagenet_prompts():
    templates = get_templates("imagenet")
    assert len(templates) == 80 and len(set(templates)) == 80
    assert all("{}" in t for t in templates)
    assert "a bad photo of a {}." in templates
    names = get_classnames("imagenet")
    assert len(names) == 1000 and names[:2] == ["tench", "goldfish"]
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and wnids[0] == "n01440764" and wnids == sorted(wnids)


def test_the_papers_27_datasets():
    paper = set(list_template_sets()) - {
        "imagenet-v2",
        "imagenet-sketch",
        "imagenet-r",
        "imagenet-a",
        "objectnet",
    }
    assert len(paper) == 27
    expected = {"cifar10": (10, 18), "cifar100": (100, 18), "sun397": (397, 2), "stanford-cars": (196, 8),
                "food101": (101, 1), "kinetics700": (700, 28), "country211": (211, 5), "eurosat": (10, 3)}  # fmt: skip
    for name, (n_classes, n_templates) in expected.items():
        assert (len(get_classnames(name)), len(get_templates(name))) == (n_classes, n_templates), name
    assert get_templates("oxford_pets") == ["a photo of a {}, a type of pet."]
    assert get_classnames("cifar10")[0] == "airplane"
    assert get_classname_synonyms("fer2013")[3] == ["happy", "smiling"]


def test_subset_maps_have_the_right_sizes():
    r, a = subset_indices("imagenet-r"), subset_indices("imagenet-a")
    assert len(r) == len(set(r)) == 200 and len(a) == len(set(a)) == 200
    assert all(0 <= i < 1000 for i in r + a) and r == sorted(r) and a == sorted(a)
    wnids = imagenet_wnids()
    assert wnids[r[0]] == "n01443537" and wnids[a[0]] == "n01498041"  # goldfish; stingray
    assert len(get_classnames("imagenet-r")) == 200 and get_classnames("imagenet-r")[0] == "goldfish"
    objectnet = objectnet_classes()
    assert len(objectnet) == 113 == len(get_classnames("objectnet"))
    assert objectnet["alarm_clock"]["imagenet_indices"] == [409, 530]  # analog clock, digital clock
    assert len(get_templates("imagenet-sketch")) == 80


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(KeyError, match="available: .*cifar10"):
        get_templates("cifar11")
