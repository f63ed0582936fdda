"""In-memory batch loader: indices from the main-process sampler, batched augmentation, caption tokens.

`ArrayLoader` implements the one loader protocol (`clipforge.data.protocol`) over decoded uint8 images held in
memory or memory-mapped from the decode-once cache. No worker processes: gathering uint8 rows and augmenting the
whole batch tensor is far cheaper than per-sample decoding, and a background thread prepares the next batches
while the model trains (torch ops drop the GIL).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor

from clipforge.data.augment import AugmentConfig, augment_batch, eval_batch
from clipforge.data.captions import DEFAULT_TEMPLATES, Captioner, PromptCaptioner, Tokenizer
from clipforge.data.errors import SkipCounter
from clipforge.data.labelled import LabelledArrays
from clipforge.data.sampler import EpochSampler, SamplerPosition

DEFAULT_AUGMENT = AugmentConfig()  # None instead means eval: resize + normalise only


class ArrayLoader(SamplerPosition):
    """Batches {"images", "text", "labels", "index"} of `LabelledArrays`, one epoch at a time.

    The batches of a given (seed, epoch) are identical whatever the resume point: the order comes from the
    sampler, augmentation and caption choice from (seed, epoch, index). `state_dict()` is the sampler's
    {"epoch", "offset", "seed"}, `offset` counting this rank's samples handed out so far in the epoch.
    """

    def __init__(
        self,
        data: LabelledArrays,
        captioner: Captioner,
        sampler: EpochSampler,
        augment: AugmentConfig | None = DEFAULT_AUGMENT,
        image_size: int | None = None,
        prefetch: int = 2,
    ):
        if sampler.num_samples != len(data):
            raise ValueError(f"sampler covers {sampler.num_samples} samples, data has {len(data)}")
        if not sampler.batch_size:
            raise ValueError("ArrayLoader needs a sampler with batch_size")
        self.data, self.captioner, self.sampler = data, captioner, sampler
        self.augment, self.prefetch = augment, prefetch
        self.image_size = image_size or (augment.image_size if augment else int(data.images.shape[1]))

    @property
    def classes(self) -> list[str]:
        return list(self.data.classes)

    @property
    def caption_texts(self) -> list[str]:
        return self.captioner.texts

    @property
    def skips(self) -> SkipCounter:
        return self.data.skips if self.data.skips is not None else SkipCounter()

    def make_batch(self, index: Tensor, epoch: int) -> dict[str, Tensor]:
        """The batch for these sample indices in this epoch (pure function of its arguments)."""
        raw = self.data.images[index]  # (B, H, W, 3) uint8
        if self.augment is None:
            images = eval_batch(raw, self.image_size)
        else:
            images = augment_batch(raw, index, epoch, self.sampler.seed, self.augment)
        labels = self.data.labels[index]
        text = self.captioner.tokens(labels, index, epoch)
        return {"images": images, "text": text, "labels": labels, "index": index}

    def _batches(self) -> Iterator[dict[str, Tensor]]:
        epoch = self.sampler.epoch
        for index in self.sampler.batches():
            yield self.make_batch(index, epoch)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        """The current epoch from the current position; the sampler's offset advances as batches are handed
        out and stays at the epoch's end afterwards (call `set_epoch` before the next epoch)."""
        batches = self._batches() if self.prefetch <= 0 else _threaded(self._batches(), self.prefetch)
        offset = self.sampler.offset
        for batch in batches:
            offset += len(batch["index"])
            self.sampler.offset = offset  # not set_position: the running generator keeps its own indices
            yield batch


@dataclass(frozen=True)
class LabelledLoaderConfig:
    """Everything `labelled_loader` needs besides the data: batch, seed, text length, augmentation, templates."""

    batch_size: int = 256
    seed: int = 0
    context_length: int = 77
    augment: AugmentConfig | None = DEFAULT_AUGMENT
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    drop_last: bool = True
    shuffle: bool = True
    prefetch: int = 2


def labelled_loader(
    data: LabelledArrays,
    config: LabelledLoaderConfig = LabelledLoaderConfig(),
    rank: int = 0,
    world_size: int = 1,
    tokenizer: Tokenizer | None = None,
) -> ArrayLoader:
    """The demo's train loader: template captions, seeded sampler split across ranks, batched augmentation."""
    captioner = PromptCaptioner(data.classes, config.templates, config.seed, config.context_length, tokenizer)
    sampler = EpochSampler(
        len(data), config.seed, config.shuffle, rank, world_size, config.batch_size, config.drop_last
    )
    return ArrayLoader(data, captioner, sampler, config.augment, prefetch=config.prefetch)


_DONE = object()


def _threaded(batches: Iterator, depth: int) -> Iterator:
    """Run a generator in a daemon thread, `depth` items ahead; errors re-raise in the consumer."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in batches:
                if stop.is_set():
                    return
                slots.put(item)
            slots.put(_DONE)
        except BaseException as error:  # handed to the consumer
            slots.put(error)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
