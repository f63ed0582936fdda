"""Class names per dataset and the class-subset maps of the ImageNet distribution-shift sets."""

from __future__ import annotations

from clipforge.zeroshot._data import load_json
from clipforge.zeroshot.templates import canonical


def _table() -> dict[str, list[str]]:
    return {canonical(k): v for k, v in load_json("classnames.json")["datasets"].items()}


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k WordNet ids in the standard class-index order."""
    return list(load_json("subsets.json")["imagenet_wnids"])


def subset_indices(dataset: str) -> list[int]:
    """ImageNet class indices a shifted set covers: 200 for imagenet-r/-a, 1,000 for v2/sketch."""
    key = canonical(dataset)
    subsets = load_json("subsets.json")
    if key == "imagenet-r":
        return list(subsets["imagenet_r_indices"])
    if key == "imagenet-a":
        return list(subsets["imagenet_a_indices"])
    if key in ("imagenet", "imagenet-v2", "imagenet-sketch"):
        return list(range(1000))
    raise KeyError(f"{dataset!r} is not an ImageNet subset; valid: imagenet, imagenet-v2/-sketch/-r/-a")


def objectnet_classes() -> dict[str, dict]:
    """ObjectNet's 113 ImageNet-overlapping classes: folder -> {"name", "imagenet_indices"}."""
    return dict(load_json("subsets.json")["objectnet"])


def list_classname_sets() -> list[str]:
    return sorted(_table()) + ["imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet"]


def get_classnames(dataset: str) -> list[str]:
    """Class names in label order; ImageNet subsets keep ImageNet's names in their subset order."""
    key = canonical(dataset)
    table = _table()
    if key == "objectnet":
        return [entry["name"] for entry in objectnet_classes().values()]
    if key in ("imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a"):
        names = table["imagenet"]
        return [names[i] for i in subset_indices(key)]
    if key not in table:
        raise KeyError(
            f"no class names for dataset {dataset!r}; available: {', '.join(list_classname_sets())}"
        )
    return list(table[key])


def get_classname_synonyms(dataset: str) -> list[list[str]]:
    """Every name per class (FER2013 has several); one-element lists for other datasets."""
    synonyms = load_json("classnames.json").get("synonyms", {})
    key = canonical(dataset).replace("-", "_")
    if key in synonyms:
        return [list(names) for names in synonyms[key]]
    return [[name] for name in get_classnames(dataset)]
