"""Which shards each stream consumer (rank x loader worker) reads in an epoch.

Epoch mode: the epoch's seeded shard order is dealt out whole, one shard per consumer in turn, as far as it
divides evenly; each remaining shard is read by every consumer, each keeping the samples whose offset is its
own residue modulo the number of consumers. Every sample is read by exactly one consumer, and with shards of
equal size the consumers' counts differ by less than the number of shards read in parts (at most
consumers - 1 shards, each read once more by every consumer).

Resampled mode (`--dataset-resampled`): each consumer draws shards with replacement, independently, from a
pure function of (seed, epoch, consumer, draw number); the epoch ends after a fixed number of samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from clipforge.data.augment import mix64
from clipforge.data.sampler import epoch_permutation


@dataclass(frozen=True)
class ShardRead:
    """Read shard `shard` (an index into the shard list), keeping samples with offset % stride == phase."""

    shard: int
    stride: int = 1
    phase: int = 0

    def keeps(self, offset: int) -> bool:
        return self.stride == 1 or offset % self.stride == self.phase

    def count(self, shard_size: int) -> int:
        """Samples kept from a shard of `shard_size` samples."""
        return len(range(self.phase, shard_size, self.stride)) if self.stride > 1 else shard_size


def epoch_plan(num_shards: int, seed: int, epoch: int, consumer: int, consumers: int, shuffle: bool = True):
    """This consumer's reads of the epoch, in order: its whole shards, then its share of the remainder."""
    if not 0 <= consumer < consumers:
        raise ValueError(f"consumer {consumer} outside [0, {consumers})")
    order = epoch_permutation(num_shards, seed, epoch, shuffle).tolist()
    whole = num_shards - num_shards % consumers
    reads = [ShardRead(shard) for shard in order[consumer:whole:consumers]]
    rest = order[whole:]  # the phase rotates so no consumer takes every shard's rounding extra
    return reads + [ShardRead(shard, consumers, (consumer + j) % consumers) for j, shard in enumerate(rest)]


def resampled_reads(
    num_shards: int, seed: int, epoch: int, consumer: int, start: int = 0
) -> Iterator[ShardRead]:
    """Endless shard draws with replacement for one consumer, from draw number `start` on."""
    draw = start
    while True:
        yield ShardRead(mix64(seed, epoch, consumer, draw) % num_shards)
        draw += 1
