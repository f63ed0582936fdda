"""Registry of public CLIP checkpoints: OpenAI's (each URL carries the file's SHA256 in its path).

Each entry records the activation its weights were trained with: it wins over the activation of the model name
the user gave (with a warning when they differ), since the weights are only right with their own."""

from __future__ import annotations

from dataclasses import dataclass

from clipforge.models.config import ALIASES, Activation

_BASE = "https://openaipublic.azureedge.net/clip/models"


@dataclass(frozen=True)
class PretrainedEntry:
    model: str  # clipforge preset name
    tag: str
    url: str
    sha256: str
    activation: Activation  # what the weights were trained with; wins over the model name's

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _openai(model: str, sha256: str, filename: str | None = None) -> PretrainedEntry:
    return PretrainedEntry(model, "openai", f"{_BASE}/{sha256}/{filename or model}.pt", sha256, "quick_gelu")


PRETRAINED: dict[tuple[str, str], PretrainedEntry] = {
    (e.model, e.tag): e
    for e in (
        _openai("RN50", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"),
        _openai("RN101", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599"),
        _openai("RN50x4", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"),
        _openai("RN50x16", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa"),
        _openai("RN50x64", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c"),
        _openai("ViT-B-32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
        _openai("ViT-B-16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
        _openai("ViT-L-14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
        _openai(
            "ViT-L-14-336",
            "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
            "ViT-L-14-336px",
        ),
    )
}


def canonical_name(name: str) -> str:
    name = ALIASES.get(name, name)
    return name.removesuffix("-quickgelu")


def get_pretrained(name: str, tag: str = "openai") -> PretrainedEntry:
    """The registry entry for a model name (clipforge, open_clip or OpenAI spelling) and tag."""
    key = (canonical_name(name), tag)
    if key not in PRETRAINED:
        known = ", ".join(f"{m}:{t}" for m, t in PRETRAINED)
        raise KeyError(f"no pretrained weights {name!r} with tag {tag!r}; available: {known}")
    return PRETRAINED[key]


def list_pretrained() -> list[tuple[str, str]]:
    return list(PRETRAINED)
