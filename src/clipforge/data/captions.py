"""Captions of a batch as token ids: templates for labelled images, sampled captions for image–text data.

A captioner maps (labels (B,), sample indices (B,), epoch) to (B, L) token ids, and every choice it makes is a
pure function of (seed, epoch, index), so resumed or re-sharded runs caption every sample the same way. All
candidate captions are tokenised once into a table; `texts` lists them (e.g. for a vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from clipforge.data.augment import STREAM_CAPTION, STREAM_TEMPLATE, keyed_uniform
from clipforge.tokenizer import default_tokenizer

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


class Captioner(Protocol):
    """What `ArrayLoader` asks of its captions."""

    texts: list[str]

    def tokens(self, labels: Tensor, index: Tensor, epoch: int) -> Tensor: ...


def _tokenizer_for(context_length: int, tokenizer: Tokenizer | None) -> Tokenizer:
    return tokenizer if tokenizer is not None else default_tokenizer(context_length)


class _TokenTable:
    """Every candidate caption (`texts`) tokenised once, on first use, into `token_table` (rows in `texts` order)."""

    tokenizer: Tokenizer
    _table: Tensor | None = None

    @property
    def texts(self) -> list[str]:
        raise NotImplementedError

    @property
    def token_table(self) -> Tensor:
        if self._table is None:
            self._table = self.tokenizer(self.texts)
        return self._table


class PromptCaptioner(_TokenTable):
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
        self.tokenizer = _tokenizer_for(context_length, tokenizer)

    @property
    def texts(self) -> list[str]:
        """Every caption this captioner can produce: class-major, `texts[c * T + t]`."""
        return [t.format(c) for c in self.classes for t in self.templates]

    def template_index(self, index: Tensor | np.ndarray, epoch: int) -> np.ndarray:
        """(B,) int64 template numbers."""
        draws = keyed_uniform(self.seed, epoch, index, STREAM_TEMPLATE) * len(self.templates)
        return draws.astype(np.int64)

    def caption(self, label: int, index: int, epoch: int) -> str:
        template = self.templates[int(self.template_index(np.array([index]), epoch)[0])]
        return template.format(self.classes[label])

    def tokens(self, labels: Tensor, index: Tensor, epoch: int) -> Tensor:
        """(B,) labels and sample indices -> (B, L) token ids."""
        rows = labels.to(torch.int64) * len(self.templates) + torch.from_numpy(
            self.template_index(index, epoch)
        )
        return self.token_table[rows]


class ImageCaptions(_TokenTable):
    """Several human captions per image (image–text data); one is used per image per epoch.

    Image `i` with `k` captions uses them in a seeded order that is reshuffled every `k` epochs: epochs
    `c*k .. c*k + k-1` use each of its captions exactly once (a permutation keyed by (seed, c, i)), so every
    caption is seen and none twice before all were. One caption per image is the case `k = 1` (always that one).
    """

    def __init__(
        self,
        captions: Sequence[Sequence[str]],
        seed: int = 0,
        context_length: int = 77,
        tokenizer: Tokenizer | None = None,
    ):
        counts = np.asarray([len(c) for c in captions], dtype=np.int64)
        if len(counts) and counts.min() < 1:
            raise ValueError(f"image {int(np.argmin(counts))} has no caption; every image needs at least one")
        self.captions = [list(c) for c in captions]
        self.counts = torch.from_numpy(counts)  # (N,)
        self.first = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))  # (N,)
        self.max_count = int(counts.max()) if len(counts) else 1
        self.seed, self.context_length = seed, context_length
        self.tokenizer = _tokenizer_for(context_length, tokenizer)

    @property
    def texts(self) -> list[str]:
        """Every caption, image-major: image i's captions are rows first[i] .. first[i] + counts[i] - 1."""
        return [text for image in self.captions for text in image]

    def caption_index(self, index: Tensor, epoch: int) -> Tensor:
        """(B,) int64: which of its captions each image uses in `epoch` (0 .. counts[i] - 1)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        counts = self.counts[index]  # (B,)
        cycle, slot = epoch // counts, epoch % counts  # (B,), (B,)
        # keys (B, K): one uniform per (cycle, image, caption); captions past an image's count sort last
        j = torch.arange(self.max_count)
        composite = ((cycle[:, None] * len(self.counts) + index[:, None]) * self.max_count + j).numpy()
        keys = torch.from_numpy(keyed_uniform(self.seed, 0, composite.reshape(-1), STREAM_CAPTION))
        keys = keys.view(len(index), self.max_count).masked_fill(j >= counts[:, None], 2.0)
        order = keys.argsort(dim=1)  # (B, K): image i's captions in this cycle's order
        return order.gather(1, slot[:, None])[:, 0]

    def caption(self, label: int, index: int, epoch: int) -> str:
        return self.captions[index][int(self.caption_index(torch.tensor([index]), epoch)[0])]

    def rows(self, index: Tensor, epoch: int) -> Tensor:
        """(B,) int64 rows of `texts` / `token_table`: the caption each image uses in `epoch` (e.g. to gather
        cached text features of a locked text tower, which follow the same rows)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return self.first[index] + self.caption_index(index, epoch)

    def tokens(self, labels: Tensor, index: Tensor, epoch: int) -> Tensor:
        return self.token_table[self.rows(index, epoch)]
