"""Main-process epoch sampler: a seeded permutation per epoch, split across ranks, resumable mid-epoch.

The order depends only on (seed, epoch, rank, world_size), never on the number of loader workers, so a run
resumed with `set_position(epoch, offset)` and any worker count consumes exactly the remaining samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_permutation(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """(N,) int64: the epoch's order over all samples (identity when not shuffling)."""
    if not shuffle:
        return torch.arange(num_samples)
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(num_samples, generator=generator)


def seeded_split(total: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the other indices, `count` indices chosen by a seeded permutation), both sorted: a held-out set, or a
    random subset that keeps every class of a class-sorted file."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return order[count:].sort().values, order[:count].sort().values


class EpochSampler:
    """Yields sample indices of this rank for the current epoch, starting at `offset`.

    Ranks take interleaved slices of the permutation (`perm[rank::world_size]`) after truncating it to a multiple
    of `world_size`, so every rank sees the same number of samples. With `drop_last` the per-rank count is also
    truncated to whole batches. `offset` counts samples of this rank already consumed in `epoch`.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int | None = None,
        drop_last: bool = False,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.drop_last = batch_size, drop_last
        self.epoch, self.offset = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.set_position(epoch, 0)

    def set_position(self, epoch: int, offset: int) -> None:
        """Resume: the next iteration yields this rank's samples of `epoch` from `offset` on."""
        if not 0 <= offset <= self.samples_per_rank:
            raise ValueError(f"offset {offset} outside [0, {self.samples_per_rank}] samples of this rank")
        self.epoch, self.offset = epoch, offset

    @property
    def samples_per_rank(self) -> int:
        count = self.num_samples // self.world_size
        if self.drop_last and self.batch_size:
            count -= count % self.batch_size
        return count

    @property
    def batches_per_epoch(self) -> int:
        """Batches of this rank per epoch (the last one partial unless `drop_last`)."""
        if not self.batch_size:
            raise ValueError("EpochSampler.batches_per_epoch needs batch_size")
        return -(-self.samples_per_rank // self.batch_size)

    def __len__(self) -> int:
        return self.samples_per_rank - self.offset

    def indices(self) -> torch.Tensor:
        """(len(self),) int64: the remaining indices of this rank in this epoch."""
        perm = epoch_permutation(self.num_samples, self.seed, self.epoch, self.shuffle)
        mine = perm[: self.num_samples - self.num_samples % self.world_size][self.rank :: self.world_size]
        return mine[self.offset : self.samples_per_rank]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def batches(self) -> Iterator[torch.Tensor]:
        """The remaining indices in batches of `batch_size` (last one partial unless `drop_last`)."""
        if not self.batch_size:
            raise ValueError("EpochSampler.batches() needs batch_size")
        remaining = self.indices()
        if len(remaining):  # (torch.split of an empty tensor gives one empty chunk)
            yield from torch.split(remaining, self.batch_size)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this sampler seed {self.seed}")
        self.set_position(state["epoch"], state["offset"])


class EpochBatchSampler:
    """`batch_sampler` for torch's DataLoader: lists of indices from an `EpochSampler` (order kept with workers)."""

    def __init__(self, sampler: EpochSampler, with_epoch: bool = False):
        if not sampler.batch_size:
            raise ValueError("EpochBatchSampler needs an EpochSampler with batch_size")
        self.sampler, self.with_epoch = sampler, with_epoch

    def __iter__(self) -> Iterator[list]:
        """Lists of indices, or of (epoch, index) pairs with `with_epoch` (keyed augmentation in workers)."""
        epoch = self.sampler.epoch
        for batch in self.sampler.batches():
            yield [(epoch, i) for i in batch.tolist()] if self.with_epoch else batch.tolist()

    def __len__(self) -> int:
        size = self.sampler.batch_size
        return -(-len(self.sampler) // size)


class SamplerPosition:
    """The loader protocol's position members for a loader whose order is an `EpochSampler` (`self.sampler`)."""

    sampler: EpochSampler

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict:
        """{"epoch", "offset", "seed"}: `load_state_dict` continues with the batch after the last one handed out."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
