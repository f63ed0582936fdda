"""Registry of public CLIP weights: every open_clip (architecture, tag) pair, read from pretrained.json.

The data file is generated from open_clip's pretrained table by benchmarks/pretrained_table.py (a test checks
it has not drifted). Each entry says where the weights are (a URL, whose SHA256 or published prefix is
`sha256`, and/or a Hugging Face Hub repo), the activation they were trained with -- which wins over the
activation of the model name the user gave, with a warning when they differ -- and their preprocessing,
which wins over the preset's default as in open_clip (the image size follows the model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from clipforge.models.config import ALIASES, Activation, PreprocessConfig

DATA_FILE = "pretrained.json"


@dataclass(frozen=True)
class PretrainedEntry:
    model: str  # open_clip architecture name ('ViT-B-32', 'ViT-B-32-quickgelu', ...)
    tag: str
    url: str  # '' when the weights are only on the Hub
    sha256: str  # of the URL's file: full digest or its published prefix (>= 8 hex digits); '' if unknown
    activation: Activation  # what the weights were trained with; wins over the model name's
    hf_hub: str = ""  # Hub repo id holding the same weights in open_clip's layout
    hf_file: str = ""  # file in that repo; '' = open_clip's default (open_clip_model.safetensors or .bin)
    preprocess: PreprocessConfig | None = None  # None: the preset's

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def source(self) -> str:
        """Where `load_pretrained` fetches from: the URL when its SHA256 is published, else the Hub."""
        if self.url and (self.sha256 or not self.hf_hub):
            return "url"
        return "hf_hub" if self.hf_hub else "none"


def entry_from_row(row: dict) -> PretrainedEntry:
    """A registry entry from one row of pretrained.json; unknown or missing fields name the row."""
    where = f"{DATA_FILE}: {row.get('model')}:{row.get('tag')}"
    row = dict(row)
    pre = row.pop("preprocess", None)
    try:
        preprocess = None
        if pre is not None:
            preprocess = PreprocessConfig(**{**pre, "mean": tuple(pre["mean"]), "std": tuple(pre["std"])})
        return PretrainedEntry(**row, preprocess=preprocess)
    except (TypeError, KeyError, ValueError) as err:
        raise ValueError(f"{where}: bad entry ({err})") from None


def _load() -> dict[tuple[str, str], PretrainedEntry]:
    rows = json.loads(resources.files("clipforge.checkpoints").joinpath(DATA_FILE).read_text())["entries"]
    return {(entry.model, entry.tag): entry for entry in map(entry_from_row, rows)}


PRETRAINED: dict[tuple[str, str], PretrainedEntry] = _load()


def clean_tag(tag: str) -> str:
    """open_clip's tag normalisation: 'LAION2B-s34B-b79K' -> 'laion2b_s34b_b79k'."""
    return tag.lower().replace("-", "_")


def canonical_name(name: str) -> str:
    name = ALIASES.get(name, name)
    return name.removesuffix("-quickgelu")


def find_pretrained(name: str, tag: str) -> PretrainedEntry | None:
    """The entry for exactly (name, tag) as open_clip lists it, else for the same architecture without
    '-quickgelu' (the entry's activation then says what the weights need), else None. Tags are also tried
    as open_clip normalises them ('LAION2B-s34B-b79K' finds 'laion2b_s34b_b79k')."""
    name = ALIASES.get(name, name)
    for model in dict.fromkeys((name, canonical_name(name))):
        for spelling in dict.fromkeys((str(tag), clean_tag(str(tag)))):
            if (model, spelling) in PRETRAINED:
                return PRETRAINED[(model, spelling)]
    return None


def get_pretrained(name: str, tag: str = "openai") -> PretrainedEntry:
    """The registry entry for a model name (open_clip or OpenAI spelling) and tag."""
    entry = find_pretrained(name, tag)
    if entry is None:
        tags = tags_for(name)
        known = f"available tags for {name!r}: {', '.join(tags)}" if tags else "see list_pretrained()"
        raise KeyError(f"no pretrained weights {name!r} with tag {tag!r}; {known}")
    return entry


def tags_for(name: str) -> list[str]:
    """The tags registered for `name` (and for its architecture without '-quickgelu')."""
    names = {ALIASES.get(name, name), canonical_name(name)}
    return list(dict.fromkeys(tag for model, tag in PRETRAINED if model in names))


def list_pretrained() -> list[tuple[str, str]]:
    return list(PRETRAINED)
