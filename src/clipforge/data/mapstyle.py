"""Map-style datasets of `Record`s decoded per sample in DataLoader workers (for sets too big to cache).

The batch order comes from the main-process `EpochSampler`, so it — and a resume via `load_state_dict` — does
not depend on the number of workers. Augmentation is keyed by (seed, epoch, index) and runs on the whole batch in
the worker's collate. Skipped samples shrink their batch and are counted in `RecordLoader.skips`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clipforge.data.augment import AugmentConfig, augment_batch, eval_batch
from clipforge.data.cache import fit_square
from clipforge.data.captions import PromptCaptioner, Tokenizer
from clipforge.data.errors import SkipCounter, SkipSample
from clipforge.data.records import Record, decode_caption, decode_image
from clipforge.data.sampler import EpochBatchSampler, EpochSampler, SamplerPosition
from clipforge.data.webdataset import seed_worker
from clipforge.tokenizer import default_tokenizer


@dataclass(frozen=True)
class Decoded:
    """One decoded sample, or the reason it was skipped."""

    index: int
    image: np.ndarray | None = None
    caption: str | None = None
    label: int = -1
    skip: str | None = None


class RecordDataset(Dataset):
    """`dataset[(epoch, index)]` -> `Decoded`: image fitted to `image_size`, caption checked (unless captioned
    from labels by a `PromptCaptioner` in the collate)."""

    def __init__(self, records: list[Record], image_size: int, captions_from_labels: bool = False):
        self.records, self.image_size, self.captions_from_labels = records, image_size, captions_from_labels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item) -> Decoded:
        _, index = item if isinstance(item, tuple) else (0, item)
        record = self.records[index]
        try:
            caption = None if self.captions_from_labels else decode_caption(record.caption, record.key)
            image = fit_square(decode_image(record.image, record.key), self.image_size)
        except SkipSample as skip:
            return Decoded(index, skip=skip.reason)
        return Decoded(index, image, caption, -1 if record.label is None else record.label)


class RecordCollate:
    """Picklable collate: stack uint8, augment the batch (keyed), tokenise; skips travel in `_skips`."""

    def __init__(
        self, augment: AugmentConfig | None, image_size: int, seed: int, epoch: int, captioner, tokenizer
    ):
        self.augment, self.image_size, self.seed = augment, image_size, seed
        self.epoch, self.captioner, self.tokenizer = epoch, captioner, tokenizer

    def __call__(self, items: list[Decoded]) -> dict:
        skips = SkipCounter()
        for item in items:
            if item.skip:
                skips.add(item.skip)
        kept = [item for item in items if not item.skip]
        batch: dict = {"_skips": skips.as_dict(), "_requested": len(items)}
        if not kept:
            return batch
        epoch = self.epoch
        index = torch.tensor([item.index for item in kept], dtype=torch.int64)
        labels = torch.tensor([item.label for item in kept], dtype=torch.int64)
        raw = torch.from_numpy(np.stack([item.image for item in kept]))  # (B, S, S, 3) uint8
        if self.augment is None:
            batch["images"] = eval_batch(raw, self.image_size)
        else:
            batch["images"] = augment_batch(raw, index, epoch, self.seed, self.augment)
        if self.captioner is not None:
            batch["text"] = self.captioner.tokens(labels, index, epoch)
        else:
            batch["text"] = self.tokenizer([item.caption for item in kept])
        batch["labels"], batch["index"] = labels, index
        return batch


class RecordLoader(SamplerPosition):
    """Worker-decoded batches {"images", "text", "labels", "index"} in the sampler's order (the one loader
    protocol of `clipforge.data.protocol`); a batch shrinks by its skipped samples."""

    def __init__(
        self,
        dataset: RecordDataset,
        sampler: EpochSampler,
        augment: AugmentConfig | None = None,
        captioner: PromptCaptioner | None = None,
        tokenizer: Tokenizer | None = None,
        num_workers: int = 2,
    ):
        if sampler.num_samples != len(dataset):
            raise ValueError(f"sampler covers {sampler.num_samples} samples, dataset has {len(dataset)}")
        if not sampler.batch_size:
            raise ValueError("RecordLoader needs a sampler with batch_size")
        self.dataset, self.sampler, self.augment = dataset, sampler, augment
        self.captioner, self.num_workers = captioner, num_workers
        self.tokenizer = tokenizer or default_tokenizer()
        self.skips = SkipCounter()

    def state_dict(self) -> dict:
        """The sampler's {"epoch", "offset", "seed"} (offset: samples requested so far, skipped ones included)
        and the skip counts so far."""
        return {**super().state_dict(), "skips": self.skips.as_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.skips = SkipCounter(state.get("skips"))

    def __iter__(self) -> Iterator[dict]:
        epoch = self.sampler.epoch
        collate = RecordCollate(
            self.augment, self.dataset.image_size, self.sampler.seed, epoch, self.captioner, self.tokenizer
        )
        loader = DataLoader(
            self.dataset, batch_sampler=EpochBatchSampler(self.sampler, with_epoch=True), collate_fn=collate,
            num_workers=self.num_workers, worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(self.sampler.seed * 1_000_003 + epoch),
        )  # fmt: skip
        offset = self.sampler.offset
        for batch in loader:
            offset += batch.pop("_requested")
            self.sampler.offset = offset  # the DataLoader already holds its own index lists
            self.skips.merge(batch.pop("_skips"))
            if "images" in batch:
                yield batch
