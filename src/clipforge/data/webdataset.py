"""Streaming WebDataset shards for data too big for memory: split by rank and worker, resumable by position.

Each of the `world_size * num_workers` consumers reads its own shards (`order[c::n]` of a per-epoch seeded shard
order) or, with fewer shards than consumers, every shard keeping samples whose offset is `c (mod n)`; either way
each sample is read exactly once per epoch. Workers build whole batches; a batch's position (shard, next sample
offset) lets `ShardLoader.state_dict()` resume every consumer where it stopped (same rank/worker counts).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from clipforge.data.augment import AugmentConfig, augment_batch, eval_batch
from clipforge.data.cache import CAPTION_KEYS, fit_square, sample_image_bytes, sample_label
from clipforge.data.captions import PromptCaptioner, Tokenizer
from clipforge.data.errors import MISSING_FIELD, SkipCounter, SkipSample
from clipforge.data.records import decode_caption, decode_image
from clipforge.data.tarshards import expand_shards, iter_shard
from clipforge.tokenizer import default_tokenizer

SHARD_STRIDE = 2**32  # sample index = shard number * SHARD_STRIDE + offset in the shard


@dataclass(frozen=True)
class StreamConfig:
    """How shards become batches. `captioner` captions labelled samples (`.cls`), else `.txt` is the caption."""

    batch_size: int = 256
    image_size: int = 32
    seed: int = 0
    shuffle_shards: bool = True
    drop_last: bool = False
    augment: AugmentConfig | None = AugmentConfig()


def consumer_plan(num_shards: int, seed: int, epoch: int, consumer: int, consumers: int, shuffle: bool):
    """(shard numbers this consumer reads in order, sample stride or None): its share of the epoch."""
    if shuffle:
        generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
        order = torch.randperm(num_shards, generator=generator).tolist()
    else:
        order = list(range(num_shards))
    if num_shards >= consumers:
        return order[consumer::consumers], None
    return order, consumers  # every consumer reads all shards, keeping offsets == consumer (mod consumers)


class ShardStream(IterableDataset):
    """Yields batches {"images", "text", "labels", "index", "_position", "_skips"} (the `_` keys for the loader)."""

    def __init__(
        self,
        shards,
        config: StreamConfig = StreamConfig(),
        captioner: PromptCaptioner | None = None,
        tokenizer: Tokenizer | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.shards = [str(p) for p in expand_shards(shards)]
        self.config, self.captioner = config, captioner
        self.tokenizer = tokenizer or (None if captioner else default_tokenizer())
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start: dict[int, tuple[int, int]] = {}  # consumer -> (position in its shard list, sample offset)

    def _consumer(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def _sample(self, sample: dict, key: str) -> tuple[np.ndarray, str | None, int]:
        data = sample_image_bytes(sample, key)
        label = sample_label(sample, key)
        caption = None
        if self.captioner is None:
            caption = decode_caption(next((sample[k] for k in CAPTION_KEYS if k in sample), None), key)
        elif label < 0:
            raise SkipSample(MISSING_FIELD, f"{key}: no .cls label to caption")
        return fit_square(decode_image(data, key), self.config.image_size), caption, label

    def _samples(self, consumer: int, consumers: int, skips: SkipCounter) -> Iterator[tuple]:
        """(array, caption, label, index, (list position, next offset)) for this consumer's share."""
        plan, stride = consumer_plan(
            len(self.shards), self.config.seed, self.epoch, consumer, consumers, self.config.shuffle_shards
        )
        first_pos, first_offset = self.start.get(consumer, (0, 0))
        for pos in range(first_pos, len(plan)):
            shard = plan[pos]
            start = first_offset if pos == first_pos else 0
            for offset, sample in iter_shard(self.shards[shard], start):
                if stride is not None and offset % stride != consumer:
                    continue
                key = f"{self.shards[shard]}:{offset}"
                try:
                    array, caption, label = self._sample(sample, key)
                except SkipSample as skip:
                    skips.add(skip.reason, skip.detail)
                    continue
                yield array, caption, label, shard * SHARD_STRIDE + offset, (pos, offset + 1)

    def _batch(self, rows: list[tuple], consumer: int, skips: SkipCounter) -> dict:
        index = torch.tensor([r[3] for r in rows], dtype=torch.int64)
        labels = torch.tensor([r[2] for r in rows], dtype=torch.int64)
        raw = torch.from_numpy(np.stack([r[0] for r in rows]))  # (B, S, S, 3) uint8
        cfg = self.config
        images = (
            augment_batch(raw, index, self.epoch, cfg.seed, cfg.augment)
            if cfg.augment
            else eval_batch(raw, cfg.image_size)
        )
        if self.captioner is not None:
            text = self.captioner.tokens(labels, index, self.epoch)
        else:
            text = self.tokenizer([r[1] for r in rows])
        pos, offset = rows[-1][4]
        batch = {"images": images, "text": text, "labels": labels, "index": index}
        batch["_position"] = torch.tensor([consumer, pos, offset], dtype=torch.int64)
        batch["_skips"] = skips.as_dict()
        skips.counts.clear()
        return batch

    def __iter__(self) -> Iterator[dict]:
        consumer, consumers = self._consumer()
        skips, rows = SkipCounter(), []
        for row in self._samples(consumer, consumers, skips):
            rows.append(row)
            if len(rows) == self.config.batch_size:
                yield self._batch(rows, consumer, skips)
                rows = []
        if rows and not self.config.drop_last:
            yield self._batch(rows, consumer, skips)
        elif skips.total or rows:  # nothing more to train on; still report skips and the end position
            yield {"_position": torch.tensor([consumer, 1 << 30, 0]), "_skips": skips.as_dict()}


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn`: python/numpy RNGs from torch's per-worker seed (base seed + worker id)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class ShardLoader:
    """A DataLoader over a `ShardStream` that keeps positions and skip counts out of the batches."""

    def __init__(self, stream: ShardStream, num_workers: int = 2, prefetch_factor: int = 2):
        self.stream, self.num_workers, self.prefetch_factor = stream, num_workers, prefetch_factor
        self.positions: dict[int, tuple[int, int]] = {}
        self.skips = SkipCounter()

    def set_epoch(self, epoch: int) -> None:
        self.stream.epoch, self.stream.start, self.positions = epoch, {}, {}

    def state_dict(self) -> dict:
        """Resume point: epoch, each consumer's (shard list position, next offset), the topology, skip counts."""
        merged = {**self.stream.start, **self.positions}
        return {
            "epoch": self.stream.epoch,
            "positions": {str(k): list(v) for k, v in merged.items()},
            "num_workers": max(1, self.num_workers),
            "world_size": self.stream.world_size,
            "skips": self.skips.as_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        topology = (max(1, self.num_workers), self.stream.world_size)
        if (state["num_workers"], state["world_size"]) != topology:
            raise ValueError(
                f"stream state was saved with num_workers={state['num_workers']}, world_size={state['world_size']}; "
                f"this loader has {topology[0]}, {topology[1]}: resume a stream with the same topology "
                "(or use the in-memory ArrayLoader, which resumes with any worker count)"
            )
        self.stream.epoch = state["epoch"]
        self.stream.start = {int(k): tuple(v) for k, v in state["positions"].items()}
        self.positions = dict(self.stream.start)
        self.skips = SkipCounter(state.get("skips"))

    def __iter__(self) -> Iterator[dict]:
        generator = torch.Generator().manual_seed(self.stream.config.seed * 1_000_003 + self.stream.epoch)
        loader = DataLoader(
            self.stream, batch_size=None, num_workers=self.num_workers, worker_init_fn=seed_worker,
            generator=generator, prefetch_factor=self.prefetch_factor if self.num_workers else None,
            persistent_workers=False,
        )  # fmt: skip
        for batch in loader:
            consumer, pos, offset = batch.pop("_position").tolist()
            self.positions[consumer] = (pos, offset)
            self.skips.merge(batch.pop("_skips"))
            if "images" in batch:
                yield batch
