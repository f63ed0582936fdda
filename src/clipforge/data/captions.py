"""Class labels -> captions with prompt templates, and caption text -> token ids.

The template of a sample is a pure function of (seed, epoch, index), so resumed or re-sharded runs caption
every sample the same way. All (class, template) captions are tokenised once into a table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from clipforge.data.augment import STREAM_TEMPLATE, keyed_uniform

# Short everyday phrasings; `{}` is the class name.
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
    "a cropped photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a pixelated photo of the {}.",
)

Tokenizer = Callable[[Sequence[str]], Tensor]


class ClipTokenizer:
    """`clipforge.tokenize` truncating at `context_length`; picklable (spawned workers), imported on first use."""

    def __init__(self, context_length: int = 77):
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> Tensor:
        from clipforge import tokenize

        return tokenize(list(texts), context_length=self.context_length, truncate=True)


def default_tokenizer(context_length: int = 77) -> Tokenizer:
    return ClipTokenizer(context_length)


class PromptCaptioner:
    """Captions for labelled samples: class `c`, template `t` chosen per sample from (seed, epoch, index)."""

    def __init__(
        self,
        classes: Sequence[str],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        seed: int = 0,
        context_length: int = 77,
        tokenizer: Tokenizer | None = None,
    ):
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(
                f"every template needs a '{{}}' for the class name; got {list(templates)[:3]}..."
            )
        self.classes, self.templates, self.seed = list(classes), list(templates), seed
        self.context_length = context_length
        self.tokenizer = tokenizer or default_tokenizer(context_length)
        self._table: Tensor | None = None

    def template_index(self, index: Tensor | np.ndarray, epoch: int) -> np.ndarray:
        """(B,) int64 template numbers."""
        draws = keyed_uniform(self.seed, epoch, index, STREAM_TEMPLATE) * len(self.templates)
        return draws.astype(np.int64)

    def caption(self, label: int, index: int, epoch: int) -> str:
        template = self.templates[int(self.template_index(np.array([index]), epoch)[0])]
        return template.format(self.classes[label])

    @property
    def token_table(self) -> Tensor:
        """(C * T, L) int64: tokens of class c with template t at row c * T + t."""
        if self._table is None:
            texts = [t.format(c) for c in self.classes for t in self.templates]
            self._table = self.tokenizer(texts)
        return self._table

    def tokens(self, labels: Tensor, index: Tensor, epoch: int) -> Tensor:
        """(B,) labels and sample indices -> (B, L) token ids."""
        rows = labels.to(torch.int64) * len(self.templates) + torch.from_numpy(
            self.template_index(index, epoch)
        )
        return self.token_table[rows]


class FixedCaptions:
    """Captions given per sample (image–text data): all tokenised once, looked up by sample index.

    Same `tokens(labels, index, epoch)` interface as `PromptCaptioner`, so `ArrayLoader` takes either.
    """

    def __init__(self, captions: Sequence[str], context_length: int = 77, tokenizer: Tokenizer | None = None):
        self.captions = list(captions)
        self.tokenizer = tokenizer or default_tokenizer(context_length)
        self._table: Tensor | None = None

    def caption(self, label: int, index: int, epoch: int) -> str:
        return self.captions[index]

    @property
    def token_table(self) -> Tensor:
        """(N, L) int64: tokens of every caption, row = sample index."""
        if self._table is None:
            self._table = self.tokenizer(self.captions)
        return self._table

    def tokens(self, labels: Tensor, index: Tensor, epoch: int) -> Tensor:
        return self.token_table[index]
