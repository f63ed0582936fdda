"""In-memory batch loader: indices from the main-process sampler, batched augmentation, template tokens.

No worker processes: gathering uint8 rows and augmenting the whole batch tensor is far cheaper than per-sample
decoding, and a background thread prepares the next batches while the model trains (torch ops drop the GIL).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor

from clipforge.data.augment import AugmentConfig, augment_batch, eval_batch
from clipforge.data.captions import DEFAULT_TEMPLATES, FixedCaptions, PromptCaptioner, Tokenizer
from clipforge.data.labelled import LabelledArrays
from clipforge.data.sampler import EpochSampler

DEFAULT_AUGMENT = AugmentConfig()  # None instead means eval: resize + normalise only


class ArrayLoader:
    """Batches {"images", "text", "labels", "index"} from `LabelledArrays` for one epoch at a time.

    `set_epoch(e)` / `set_position(e, offset)` go to the sampler; the batches of a given (seed, epoch) are
    identical whatever the resume point, so `offset` = samples already consumed restores the stream exactly.
    """

    def __init__(
        self,
        data: LabelledArrays,
        captioner: PromptCaptioner | FixedCaptions,
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

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def set_position(self, epoch: int, offset: int) -> None:
        self.sampler.set_position(epoch, offset)

    def state_dict(self) -> dict:
        """{"epoch", "offset", "seed"}: `offset` counts samples of this rank handed out so far in the epoch
        (the batch just yielded included), so `load_state_dict` continues with the next batch."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def __len__(self) -> int:
        size = self.sampler.batch_size
        return -(-len(self.sampler) // size)

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
        """One epoch from the current position; the sampler's offset advances as batches are handed out and
        resets to 0 (same epoch) at the end, so call `set_epoch` before each epoch."""
        batches = self._batches() if self.prefetch <= 0 else _threaded(self._batches(), self.prefetch)
        epoch, offset = self.sampler.epoch, self.sampler.offset
        for batch in batches:
            offset += len(batch["index"])
            self.sampler.offset = offset  # not set_position: the running generator keeps its own indices
            yield batch
        self.sampler.offset = 0
        self.sampler.epoch = epoch


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
