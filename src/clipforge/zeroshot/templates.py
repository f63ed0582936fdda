"""Prompt templates per dataset (package data from OpenAI's CLIP release); `{}` marks the class name."""

from __future__ import annotations

from clipforge.zeroshot._data import load_json

# Datasets that share ImageNet's classes (or a subset of them) also share its 80 templates.
IMAGENET_FAMILY = ("imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet")


def canonical(dataset: str) -> str:
    return dataset.strip().lower().replace("_", "-")


def _table() -> dict[str, list[str]]:
    return {canonical(k): v for k, v in load_json("templates.json")["datasets"].items()}


def list_template_sets() -> list[str]:
    return sorted(_table()) + list(IMAGENET_FAMILY)


def get_templates(dataset: str) -> list[str]:
    """The paper's templates for `dataset` (e.g. "imagenet": 80, "cifar10": 18); ImageNet variants use ImageNet's."""
    key = canonical(dataset)
    if key in IMAGENET_FAMILY:
        key = "imagenet"
    table = _table()
    if key not in table:
        raise KeyError(f"no templates for dataset {dataset!r}; available: {', '.join(list_template_sets())}")
    return list(table[key])


SIMPLE_TEMPLATES = ["a photo of a {}."]
