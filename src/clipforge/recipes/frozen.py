"""Locked towers run once: cached features, then many cheap epochs of what is trained (LiT on 2 CPU cores).

A locked tower's output never changes during training, so re-running it every epoch wastes nearly all of a
CPU budget. `image_feature_cache` runs the locked image trunk once over `views` augmented copies of each
training image; `text_feature_cache` runs a locked text encoder once over every caption. `CaptionPairs` then
serves batches of (cached or raw) images with one of their captions drawn per (seed, epoch, image), and
`CachedTowersObjective` is CLIP's loss with the cached parts replaced by their projections. Exact: a cached
feature equals the locked tower's output on the same augmented image (both run in eval mode).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from clipforge.data.augment import AugmentConfig, augment_batch, keyed_uniform
from clipforge.train.objectives import ContrastiveObjective

STREAM_CAPTION, STREAM_VIEW = 11, 12


def view_config(model, image_size: int | None = None, scale=(0.6, 1.0)) -> AugmentConfig:
    """Random resized crop + flip at the size fed to the image tower, normalised as the model's preprocess."""
    pre = model.config.preprocess
    size = image_size or pre.image_size
    return AugmentConfig(kind="resized_crop_flip", image_size=size, scale=scale, mean=pre.mean, std=pre.std)


@torch.no_grad()
def image_feature_cache(
    model,
    images: Tensor,
    views: int,
    augment: AugmentConfig,
    seed: int = 0,
    batch_size: int = 100,
    progress=True,
) -> Tensor:
    """(N, V, D) float16 trunk features of V views per image: view 0 is the plain resized image, views >= 1
    random resized crops + flips keyed by (seed, view, image)."""
    from clipforge.data.augment import eval_batch

    model.visual.eval()
    out = torch.empty(len(images), views, model.visual.feature_dim, dtype=torch.float16)
    bar = tqdm(total=len(images) * views, desc="cache image features", disable=not progress, unit="img")
    for view in range(views):
        for start in range(0, len(images), batch_size):
            index = torch.arange(start, min(start + batch_size, len(images)))
            chunk = images[index]
            if view == 0:
                batch = eval_batch(chunk, augment.image_size, augment.mean, augment.std)
            else:
                batch = augment_batch(chunk, index, view, seed, augment)
            out[index, view] = model.visual.features(
                batch.contiguous(memory_format=torch.channels_last)
            ).half()
            bar.update(len(index))
    bar.close()
    return out


@torch.no_grad()
def text_feature_cache(model, tokens: Tensor, batch_size: int = 256, progress=True) -> Tensor:
    """(M, W) float16 pooled features of a locked text encoder (before its projection)."""
    model.text.eval()
    out = []
    for start in tqdm(range(0, len(tokens), batch_size), desc="cache text features", disable=not progress):
        out.append(model.text.features(tokens[start : start + batch_size]).half())
    return torch.cat(out)


class CaptionPairs:
    """Image i with one of its captions, drawn per (seed, epoch, i): a map-style dataset for IndexedLoader.

    images: (N, V, D) cached features (a view drawn per (seed, epoch, i)) or (N, H, W, 3) uint8 (augmented
    with `augment`); captions: per image, rows into `caption_tokens` (M, L) and optional `caption_features`
    (M, W) (a locked text tower's cache)."""

    def __init__(
        self,
        images: Tensor,
        caption_rows: list[list[int]],
        caption_tokens: Tensor,
        caption_features: Tensor | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ):
        if len(images) != len(caption_rows):
            raise ValueError(f"{len(images)} images but captions for {len(caption_rows)}")
        self.images, self.caption_tokens, self.caption_features = images, caption_tokens, caption_features
        self.augment, self.seed = augment, seed
        self.cached_images = images.dtype != torch.uint8
        self.counts = np.array([len(rows) for rows in caption_rows])
        width = int(self.counts.max())
        self.rows = np.array(
            [rows + rows[:1] * (width - len(rows)) for rows in caption_rows]
        )  # (N, K) padded

    def __len__(self) -> int:
        return len(self.images)

    def caption_row(self, index: Tensor, epoch: int) -> Tensor:
        """(B,) rows of the drawn captions."""
        pick = (keyed_uniform(self.seed, epoch, index, STREAM_CAPTION) * self.counts[index]).astype(np.int64)
        return torch.from_numpy(self.rows[index.numpy(), pick])

    def get_batch(self, indices: list[int], epoch: int = 0) -> dict[str, Tensor]:
        index = torch.tensor(indices, dtype=torch.int64)
        rows = self.caption_row(index, epoch)
        batch = {"text": self.caption_tokens[rows], "index": index}
        if self.caption_features is not None:
            batch["text_features"] = self.caption_features[rows]
        if self.cached_images:
            views = self.images.shape[1]
            view = (keyed_uniform(self.seed, epoch, index, STREAM_VIEW) * views).astype(np.int64)
            batch["image_features"] = self.images[index, torch.from_numpy(view)]
        else:
            batch["images"] = augment_batch(self.images[index], index, epoch, self.seed, self.augment)
        return batch


class CachedTowersObjective(ContrastiveObjective):
    """CLIP's loss; a batch's cached `image_features` / `text_features` go through the towers' projections only."""

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if "image_features" in batch:
            image = self.model.visual.project(batch["image_features"].float())
        else:
            image = self.model.encode_image(batch["images"])
        if "text_features" in batch:
            text = self.model.text.project(batch["text_features"].float())
        else:
            text = self.model.encode_text(batch["text"])
        return F.normalize(image, dim=-1), F.normalize(text, dim=-1)
