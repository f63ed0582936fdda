"""Streaming WebDataset shards for data too big for memory: split by rank and worker, shuffled, resumable exactly.

Nothing is held but a shuffle buffer of encoded samples per consumer (one consumer = one loader worker of one
rank). Which shards a consumer reads comes from `shard_plan` (epoch mode: every sample once per epoch, balanced;
resampled mode: shards drawn with replacement), in a seeded order; samples pass a sliding shuffle buffer
(`shuffle_buffer`), are decoded, and the worker builds whole batches with batched augmentation keyed by
(seed, epoch, sample index).

Exact resume: each batch carries its worker's position after it (the read it is in, the next sample offset, the
keys held by its shuffle buffer, batches made), and `ShardLoader` keeps the position of the last batch it handed
out per worker, plus how many it handed out. Every worker makes a fixed quota of batches per epoch, and the
loader hands them out round-robin; after a resume the DataLoader's worker `j` plays logical worker
`(j + handed_out) % workers`, so the first batch handed out is the one an uninterrupted run would have handed
out next, from the same samples in the same order.
"""

from __future__ import annotations

import json
import random
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from clipforge.data.augment import AugmentConfig, augment_batch, eval_batch, mix64
from clipforge.data.cache import CAPTION_KEYS, fit_square, sample_image_bytes, sample_label
from clipforge.data.captions import PromptCaptioner, Tokenizer
from clipforge.data.errors import MISSING_FIELD, DataSourceError, SkipCounter, SkipSample
from clipforge.data.records import decode_caption, decode_image
from clipforge.data.shard_plan import epoch_plan, resampled_reads
from clipforge.data.shuffle_buffer import ShuffleBuffer
from clipforge.data.tarshards import expand_shards, iter_shard, shard_sizes
from clipforge.tokenizer import default_tokenizer

SHARD_STRIDE = 2**32  # sample index = shard number * SHARD_STRIDE + offset in the shard


@dataclass(frozen=True)
class StreamConfig:
    """How shards become batches. `captioner` captions labelled samples (`.cls`), else `.txt` is the caption."""

    batch_size: int = 256
    image_size: int = 32
    seed: int = 0
    shuffle_shards: bool = True
    shuffle_buffer: int = 1000  # samples held per consumer for shuffling (<= 1: shard order)
    resampled: bool = False  # draw shards with replacement; the epoch is `samples_per_epoch` samples
    samples_per_epoch: int | None = None  # all ranks together; epoch mode: at most this many (null: all)
    augment: AugmentConfig | None = AugmentConfig()


class ShardStream(IterableDataset):
    """Yields batches {"images", "text", "labels", "index", "_state", "_skips"} (the `_` keys for the loader).

    Iterated directly it is one consumer reading its share to the end (the last batch may be partial); under
    `ShardLoader` each worker makes exactly its quota of whole batches."""

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
        self.num_workers = 0  # set by ShardLoader: consumers = world_size * max(1, num_workers)
        self.epoch = 0
        self.start: dict[int, dict] = {}  # logical worker -> position to continue from
        self.rotation = 0  # DataLoader worker j plays logical worker (j + rotation) % workers
        self.quotas: list[int] | None = None  # batches per logical worker this epoch (None: to the end)

    @property
    def workers(self) -> int:
        return max(1, self.num_workers)

    def _reads(self, consumer: int, first: int):
        """(read number, ShardRead) of this consumer's epoch from read `first` on, and the number of reads
        (None: endless, resampled)."""
        cfg, count = self.config, len(self.shards)
        if cfg.resampled:
            return enumerate(resampled_reads(count, cfg.seed, self.epoch, consumer, first), start=first), None
        plan = epoch_plan(
            count, cfg.seed, self.epoch, consumer, self.world_size * self.workers, cfg.shuffle_shards
        )
        return ((i, plan[i]) for i in range(first, len(plan))), len(plan)

    def _fetch(self, keys: list) -> dict:
        """{(shard, offset): sample} for buffered samples of a saved position (re-read from their shards)."""
        wanted: dict[int, set[int]] = defaultdict(set)
        for shard, offset in keys:
            wanted[shard].add(offset)
        found = {}
        for shard, offsets in wanted.items():
            for offset, sample in iter_shard(self.shards[shard], min(offsets)):
                if offset in offsets:
                    found[(shard, offset)] = sample
                if offset >= max(offsets):
                    break
        return found

    def _emitted(self, consumer: int, state: dict | None, refill: bool):
        """(key, encoded sample, the reading position after it, the buffer) in shuffled order; while the
        generator waits after a yield, position + buffer.state_dict() is where the consumer stands.

        Epoch mode reads the plan once, then drains the buffer. `refill`: then read it again (a lap more, the
        samples repeated) for as long as the caller wants batches: skipped samples must not leave a rank short
        of its quota, or the ranks would fall out of step."""
        cfg = self.config
        buffer = ShuffleBuffer(cfg.shuffle_buffer, mix64(cfg.seed, self.epoch, consumer))
        state = state or {"lap": 0, "read": 0, "offset": 0}
        lap, first, first_offset = state["lap"], state["read"], state["offset"]
        if "buffer" in state:
            buffer.load_state_dict(state["buffer"], self._fetch)
        while True:
            reads, total = self._reads(consumer, first)
            yielded = bool(buffer.slots)
            for i, read in reads:
                for offset, sample in iter_shard(self.shards[read.shard], first_offset if i == first else 0):
                    if not read.keeps(offset):
                        continue
                    position = {"lap": lap, "read": i, "offset": offset + 1}
                    out = buffer.push((read.shard, offset), sample)
                    if out is not None:
                        yielded = True
                        yield out[0], out[1], position, buffer
            position = {"lap": lap, "read": total, "offset": 0}
            for key, sample in buffer.drain():
                yielded = True
                yield key, sample, position, buffer
            if not refill or not yielded:  # not yielded: this consumer has no samples at all
                return
            lap, first, first_offset = lap + 1, 0, 0

    def _decode(self, key: tuple, sample: dict) -> tuple[np.ndarray, str | None, int, int]:
        name = f"{self.shards[key[0]]}:{key[1]}"
        label = sample_label(sample, name)
        caption = None
        if self.captioner is None:
            caption = decode_caption(next((sample[k] for k in CAPTION_KEYS if k in sample), None), name)
        elif label < 0:
            raise SkipSample(MISSING_FIELD, f"{name}: no .cls label to caption")
        image = fit_square(decode_image(sample_image_bytes(sample, name), name), self.config.image_size)
        return image, caption, label, key[0] * SHARD_STRIDE + key[1]

    def _batch(self, rows: list[tuple], state: dict, skips: SkipCounter) -> dict:
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
        batch = {"images": images, "text": text, "labels": labels, "index": index}
        batch["_state"], batch["_skips"] = json.dumps(state), skips.as_dict()
        skips.counts.clear()
        return batch

    def worker_batches(self, logical: int) -> Iterator[dict]:
        """Logical worker `logical`'s batches of the epoch from its saved position on."""
        state = self.start.get(logical)
        made = state["batches"] if state else 0
        quota = self.quotas[logical] if self.quotas is not None else None
        if quota is not None and made >= quota:
            return
        consumer = self.rank * self.workers + logical
        skips, rows = SkipCounter(), []
        for key, sample, position, buffer in self._emitted(consumer, state, refill=quota is not None):
            try:
                rows.append(self._decode(key, sample))
            except SkipSample as skip:
                skips.add(skip.reason, skip.detail)
                continue
            if len(rows) < self.config.batch_size:
                continue
            made += 1
            after = {"worker": logical, **position, "buffer": buffer.state_dict(), "batches": made}
            yield self._batch(rows, after, skips)
            rows = []
            if quota is not None and made >= quota:
                return
        if quota is None and (rows or skips.total):  # read to the end: the partial tail, the last skips
            end = {"worker": logical, "batches": made, "end": True}
            yield (
                self._batch(rows, end, skips)
                if rows
                else {"_state": json.dumps(end), "_skips": skips.as_dict()}
            )

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        yield from self.worker_batches(((info.id if info else 0) + self.rotation) % self.workers)


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn`: python/numpy RNGs from torch's per-worker seed (base seed + worker id)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def min_consumer_samples(sizes: list[int], consumers: int) -> int:
    """A lower bound, over every epoch's shard order, of the samples one consumer reads in epoch mode."""
    whole, parts = divmod(len(sizes), consumers)
    ascending = sorted(sizes)
    return sum(ascending[:whole]) + sum(size // consumers for size in ascending[:parts])


class ShardLoader:
    """The one loader protocol (clipforge.data.protocol) over a `ShardStream`: `num_workers` DataLoader workers
    (0: the main process) each make a fixed quota of whole batches per epoch, handed out round-robin.

    `batches_per_epoch` is the same on every rank: epoch mode, each worker's quota is the whole batches in the
    fewest samples any consumer can get (from the shard sizes; the few samples over that are left out of that
    epoch), capped by `samples_per_epoch`; resampled mode, `samples_per_epoch // (world_size * batch_size)`."""

    def __init__(
        self, stream: ShardStream, num_workers: int = 2, prefetch_factor: int = 2, pin_memory: bool = False
    ):
        self.stream, self.num_workers, self.prefetch_factor = stream, num_workers, prefetch_factor
        self.pin_memory = pin_memory
        stream.num_workers = num_workers
        self.batches_per_epoch = self._batches_per_epoch()
        workers = stream.workers
        self.quotas = [
            self.batches_per_epoch // workers + (w < self.batches_per_epoch % workers) for w in range(workers)
        ]
        self.epoch, self.handed_out = 0, 0
        self.positions: dict[int, dict] = {}  # logical worker -> its position after its last batch handed out
        self.skips = SkipCounter()
        self.refilled = False  # warned that a worker repeats samples to fill its quota

    @property
    def batch_size(self) -> int:
        return self.stream.config.batch_size

    def _batches_per_epoch(self) -> int:
        cfg, stream = self.stream.config, self.stream
        per_rank = cfg.batch_size * stream.world_size
        cap = cfg.samples_per_epoch // per_rank if cfg.samples_per_epoch is not None else None
        if cfg.resampled:
            if cap is None:
                raise ValueError("a resampled stream needs samples_per_epoch (the epoch has no natural end)")
            batches = cap
        else:
            least = min_consumer_samples(shard_sizes(stream.shards), stream.world_size * stream.workers)
            batches = stream.workers * (least // cfg.batch_size)
            batches = batches if cap is None else min(batches, cap)
        if batches <= 0:
            raise DataSourceError(
                stream.shards[0], f"{len(stream.shards)} shard(s) give no whole batch of {cfg.batch_size} on each "
                f"of {stream.world_size} rank(s) x {stream.workers} worker(s); lower the batch size or the workers",
            )  # fmt: skip
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.handed_out, self.positions = epoch, 0, {}

    def state_dict(self) -> dict:
        """Resume point: the epoch, batches handed out, each worker's position after its last one handed out,
        the topology and the skip counts so far (plain values)."""
        return {
            "epoch": self.epoch,
            "handed_out": self.handed_out,
            "positions": {str(k): v for k, v in self.positions.items()},
            "num_workers": self.stream.workers,
            "world_size": self.stream.world_size,
            "skips": self.skips.as_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        topology = (self.stream.workers, self.stream.world_size)
        if (state["num_workers"], state["world_size"]) != topology:
            raise ValueError(
                f"stream state was saved with num_workers={state['num_workers']}, world_size={state['world_size']}; "
                f"this loader has {topology[0]}, {topology[1]}: resume a stream with the same topology "
                "(or use the in-memory ArrayLoader, which resumes with any worker count)"
            )
        self.epoch, self.handed_out = state["epoch"], state["handed_out"]
        self.positions = {int(k): v for k, v in state["positions"].items()}
        self.skips = SkipCounter(state.get("skips"))

    def __iter__(self) -> Iterator[dict]:
        if self.handed_out >= self.batches_per_epoch:
            return
        stream = self.stream
        stream.epoch, stream.start, stream.quotas = self.epoch, dict(self.positions), self.quotas
        stream.rotation = self.handed_out % stream.workers
        generator = torch.Generator().manual_seed(stream.config.seed * 1_000_003 + self.epoch)
        loader = DataLoader(
            stream, batch_size=None, num_workers=self.num_workers, worker_init_fn=seed_worker,
            generator=generator, prefetch_factor=self.prefetch_factor if self.num_workers else None,
            persistent_workers=False, pin_memory=self.pin_memory,
        )  # fmt: skip
        for batch in loader:
            state = json.loads(batch.pop("_state"))
            self.skips.merge(batch.pop("_skips"))
            if state.get("lap", 0) > 0 and not self.refilled:
                self.refilled = True
                warnings.warn(
                    f"stream epoch {self.epoch}: a worker of rank {stream.rank} ran out of samples before its quota "
                    f"({self.skips.summary()}) and repeats some to keep the ranks in step",
                    stacklevel=2,
                )
            self.positions[state.pop("worker")] = state
            if "images" in batch:
                self.handed_out += 1
                yield batch


def open_stream(
    shards,
    config: StreamConfig,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 2,
    classes: list[str] | None = None,
    templates: tuple[str, ...] = (),
    context_length: int = 77,
    pin_memory: bool = False,
    tokenizer=None,
) -> ShardLoader:
    """This rank's streaming loader. Captions: with `classes` (or a classes.txt beside local shards) each
    sample's `.cls` label is captioned with `templates` (default: PromptCaptioner's 12); otherwise its `.txt`
    member is the caption. Tokens: `tokenizer` (default CLIP's BPE), `context_length` per row."""
    from clipforge.data.captions import DEFAULT_TEMPLATES
    from clipforge.data.public import classes_near
    from clipforge.data.tarshards import is_remote

    paths = expand_shards(shards)
    if classes is None and paths and not is_remote(paths[0]):
        classes = classes_near(Path(paths[0]).parent)
    tokenizer = tokenizer or default_tokenizer(context_length)
    captioner = None
    if classes:
        captioner = PromptCaptioner(
            classes, templates or DEFAULT_TEMPLATES, config.seed, context_length, tokenizer
        )
        _ = captioner.token_table  # tokenise the captions once, before the workers fork
    stream = ShardStream(paths, config, captioner, tokenizer, rank, world_size)
    return ShardLoader(stream, num_workers=num_workers, pin_memory=pin_memory)
