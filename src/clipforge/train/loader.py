"""The loop's data contract and a resumable loader for map-style datasets.

A batch is a dict: "images" (B, 3, H, W) float, "text" (B, L) int64, "index" (B,) int64 dataset indices,
optionally "labels" (B,) int64. Training data is anything with `samples_per_epoch` (this rank's samples per
epoch, a multiple of the batch size) and `batches(epoch, offset)` yielding this rank's batches of `epoch`
starting after its first `offset` samples. The order is fixed in the main process by (seed, epoch, rank), so
a resumed run - with any number of workers - consumes exactly the samples an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset


class TrainData(Protocol):
    samples_per_epoch: int

    def batches(self, epoch: int, offset: int) -> Iterator[dict[str, torch.Tensor]]: ...


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """(N,) int64: the epoch's permutation of all samples, a pure function of (seed, epoch)."""
    if not shuffle:
        return torch.arange(num_samples)
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(num_samples, generator=generator)


class _BatchView(Dataset):
    """Lets DataLoader workers call `dataset.get_batch(indices, epoch)` once per batch (no per-sample collate)."""

    def __init__(self, dataset: Any, epoch: int):
        self.dataset, self.epoch = dataset, epoch

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self.dataset.get_batch(indices, self.epoch)


class IndexedLoader:
    """Batches of a map-style dataset in a seeded per-epoch order, split over ranks, resumable mid-epoch.

    The dataset either has `get_batch(indices, epoch) -> batch dict` (fast, batched decoding/augmentation),
    or `__getitem__(index) -> sample dict` (collated by DataLoader). A dataset with `set_epoch(epoch)` gets it
    before the epoch's workers start. Randomness inside the dataset must come from (seed, epoch, index), not
    from worker RNG, for resumed runs to see the same pixels."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ):
        self.dataset, self.batch_size, self.seed, self.shuffle = dataset, batch_size, seed, shuffle
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        per_rank = len(dataset) // world_size
        self.samples_per_epoch = per_rank - per_rank % batch_size  # whole batches only
        if self.samples_per_epoch == 0:
            raise ValueError(
                f"dataset of {len(dataset)} samples gives no full batch of {batch_size} on each of {world_size} ranks"
            )

    def rank_indices(self, epoch: int) -> torch.Tensor:
        """(samples_per_epoch,) this rank's sample indices of `epoch`, in order."""
        order = epoch_order(len(self.dataset), self.seed, epoch, self.shuffle)
        order = order[: len(order) // self.world_size * self.world_size]
        return order[self.rank :: self.world_size][: self.samples_per_epoch]

    def batches(self, epoch: int, offset: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        if not 0 <= offset <= self.samples_per_epoch:
            raise ValueError(f"offset {offset} outside [0, {self.samples_per_epoch}]")
        indices = self.rank_indices(epoch)[offset:].tolist()
        index_batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        workers = dict(num_workers=self.num_workers, pin_memory=torch.cuda.is_available())
        if self.num_workers > 0:
            workers["prefetch_factor"] = 4
        if hasattr(self.dataset, "get_batch"):
            if self.num_workers == 0:  # skip DataLoader machinery entirely
                yield from (self.dataset.get_batch(b, epoch) for b in index_batches)
                return
            loader = DataLoader(
                _BatchView(self.dataset, epoch), batch_size=None, sampler=index_batches, **workers
            )
        else:
            loader = DataLoader(self.dataset, batch_sampler=index_batches, **workers)
        yield from loader


class PositionedLoader:
    """Adapts a loader with `set_position(epoch, offset)` and `__iter__` (clipforge.data's loaders) to TrainData.

    The wrapped loader must yield whole batches (drop_last) so every step has `batch_size` pairs."""

    def __init__(self, loader: Any, batch_size: int):
        self.loader = loader
        sampler = getattr(loader, "sampler", None)
        per_rank = getattr(sampler, "samples_per_rank", None)
        self.samples_per_epoch = int(per_rank) if per_rank is not None else len(loader) * batch_size

    def batches(self, epoch: int, offset: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        self.loader.set_position(epoch, offset)
        yield from self.loader


def as_train_data(data: Any, batch_size: int) -> TrainData:
    """`data` itself when it has `batches(epoch, offset)`, else a PositionedLoader around it."""
    if hasattr(data, "batches") and hasattr(data, "samples_per_epoch"):
        return data
    if hasattr(data, "set_position"):
        return PositionedLoader(data, batch_size)
    raise TypeError(
        f"train_data {type(data).__name__} needs samples_per_epoch + batches(epoch, offset), "
        "or set_position(epoch, offset) + __iter__"
    )
