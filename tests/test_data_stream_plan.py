"""Stream building blocks: the rank x worker shard plan reads every sample exactly once per epoch (balanced),
resampled draws are reproducible, and the shuffle buffer's small state restores it exactly."""

from __future__ import annotations

import pytest

from clipforge.data.shard_plan import ShardRead, epoch_plan, resampled_reads
from clipforge.data.shuffle_buffer import ShuffleBuffer


@pytest.mark.parametrize(("num_shards", "consumers"), [(5, 1), (5, 2), (5, 4), (3, 4), (8, 4), (2, 6)])
def test_epoch_plan_reads_every_sample_once_and_balanced(num_shards, consumers):
    sizes = [10] * num_shards
    for epoch in range(3):
        seen, per_consumer = [], []
        for consumer in range(consumers):
            reads = epoch_plan(num_shards, seed=1, epoch=epoch, consumer=consumer, consumers=consumers)
            kept = [(r.shard, o) for r in reads for o in range(sizes[r.shard]) if r.keeps(o)]
            assert len(kept) == sum(r.count(sizes[r.shard]) for r in reads)
            seen += kept
            per_consumer.append(len(kept))
        assert sorted(seen) == [(s, o) for s in range(num_shards) for o in range(10)]  # once each
        assert max(per_consumer) - min(per_consumer) <= num_shards % consumers  # balanced (equal shards)
        assert sum(r.stride == 1 for r in reads) == num_shards // consumers  # whole shards where possible
    first = [r.shard for r in epoch_plan(8, 1, 0, 0, 1)]
    assert first != [r.shard for r in epoch_plan(8, 1, 1, 0, 1)]  # a new shard order each epoch
    assert [r.shard for r in epoch_plan(8, 1, 0, 0, 1, shuffle=False)] == list(range(8))


def test_resampled_reads_reproducible_and_independent():
    draws = [r.shard for r, _ in zip(resampled_reads(5, 0, 0, 0), range(200), strict=False)]
    assert set(draws) == set(range(5))  # with replacement, all shards drawn
    again = [r.shard for r, _ in zip(resampled_reads(5, 0, 0, 0, start=50), range(150), strict=False)]
    assert again == draws[50:]  # resumable at any draw
    other = [r.shard for r, _ in zip(resampled_reads(5, 0, 0, 1), range(200), strict=False)]
    assert other != draws and ShardRead(3).keeps(7)


def test_shuffle_buffer_shuffles_locally_and_resumes_exactly():
    samples = [(i, f"sample {i}") for i in range(500)]

    def run(buffer, stream):
        out = [buffer.push(k, v) for k, v in stream]
        return [o[0] for o in out if o is not None] + [k for k, _ in buffer.drain()]

    full = run(ShuffleBuffer(64, seed=7), samples)
    assert sorted(full) == list(range(500)) and full != list(range(500))
    assert max(abs(i - pos) for pos, i in enumerate(full)) > 64  # a sliding window, not blocks
    assert run(ShuffleBuffer(64, seed=7), samples) == full and run(ShuffleBuffer(64, seed=8), samples) != full
    # Stop after 300 pushes, keep only the small state, restore into a fresh buffer, continue.
    buffer = ShuffleBuffer(64, seed=7)
    head = [o[0] for o in (buffer.push(k, v) for k, v in samples[:300]) if o is not None]
    state = buffer.state_dict()
    assert len(state["keys"]) == 64 and state["emitted"] == len(head)
    restored = ShuffleBuffer(64, seed=7)
    restored.load_state_dict(state, fetch=lambda keys: {k: f"sample {k}" for k in keys})
    assert head + run(restored, samples[300:]) == full
    with pytest.raises(ValueError, match="not found again"):
        ShuffleBuffer(64, seed=7).load_state_dict(state, fetch=lambda keys: {})
    assert run(ShuffleBuffer(1, seed=7), samples) == list(range(500))  # size 1: stream order
