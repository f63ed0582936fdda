"""Prompt sets for zero-shot on the unseen label sets, and the rule that picks one per set on validation data.

Candidates: one plain template, the paper's templates for the dataset (OpenAI's release, via
clipforge.zeroshot.templates), ImageNet's 80, and captions in Flickr8k's own style (its annotators wrote
"A dog runs through the grass ."). `choose_prompts` scores each candidate on a set's *validation* split (the
few-shot `train` splits, CIFAR-10's train split) and keeps the best; mnist has no validation split and
takes the candidate with the best mean rank on the others. Test splits never take part.
"""

from __future__ import annotations

from clipforge.zeroshot.templates import get_templates

FLICKR_STYLE = [
    "a {} .",
    "a photo of a {} .",
    "a picture of a {} .",
    "a close up of a {} .",
    "there is a {} in the picture .",
    "a {} in the picture .",
]

PAPER_TEMPLATES = {  # the paper's prompt set per unseen set
    "imagenette": "imagenet",
    "tiny-imagenet": "imagenet",
    "flowers5": "flowers102",
    "mnist": "mnist",
    "cifar10": "cifar10",
}


def candidates(set_name: str) -> dict[str, list[str]]:
    return {
        "plain": ["a photo of a {}."],
        "paper": get_templates(PAPER_TEMPLATES[set_name]),
        "imagenet80": get_templates("imagenet"),
        "flickr": list(FLICKR_STYLE),
        "flickr+paper": list(FLICKR_STYLE) + get_templates(PAPER_TEMPLATES[set_name]),
    }


# Chosen by `benchmarks/language.py --choose-prompts` on validation splits (docs/language.md); a set absent
# here uses "paper".
CHOSEN: dict[str, str] = {}


def prompts_for(set_name: str, choice: str | None = None) -> list[str]:
    return candidates(set_name)[choice or CHOSEN.get(set_name, "paper")]


DEFAULT_PROMPTS = {name: prompts_for(name) for name in PAPER_TEMPLATES}
