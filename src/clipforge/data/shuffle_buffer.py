"""A sliding-window shuffle buffer (WebDataset's `shuffle(n)`) whose state is small and exact.

The buffer holds up to `size` samples; once full, each new sample takes the slot of a randomly chosen one,
which is emitted. At the end of the stream the rest come out in random order. Its random draws are a pure
function of (seed, number emitted so far), so its whole state is the keys of the samples in its slots (in
slot order) and that count: a checkpoint stores a few thousand integers, not the samples, and `restore`
refills the slots by fetching those keys again (re-reading the shards they came from).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

from clipforge.data.augment import mix64


class ShuffleBuffer:
    """Shuffles a stream of (key, sample) pairs within a window of `size` (1 or less: no shuffling)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.slots: list[tuple[Hashable, Any]] = []
        self.emitted = 0

    def _draw(self, n: int) -> int:
        return mix64(self.seed, self.emitted) % n

    def push(self, key: Hashable, sample: Any) -> tuple[Hashable, Any] | None:
        """Add a sample; returns the one it displaces once the buffer is full, else None."""
        if self.size <= 1:
            self.emitted += 1
            return key, sample
        if len(self.slots) < self.size:
            self.slots.append((key, sample))
            return None
        slot = self._draw(len(self.slots))
        out, self.slots[slot] = self.slots[slot], (key, sample)
        self.emitted += 1
        return out

    def drain(self) -> Iterator[tuple[Hashable, Any]]:
        """The samples still held, in random order (the stream has ended)."""
        while self.slots:
            slot = self._draw(len(self.slots))
            out = self.slots[slot]
            self.slots[slot] = self.slots[-1]
            self.slots.pop()
            self.emitted += 1
            yield out

    def state_dict(self) -> dict:
        return {"keys": [key for key, _ in self.slots], "emitted": self.emitted}

    def load_state_dict(self, state: dict, fetch: Callable[[list], dict]) -> None:
        """Refill the slots: `fetch(keys)` returns {key: sample} for those keys."""
        keys = [tuple(k) if isinstance(k, list) else k for k in state["keys"]]
        found = fetch(keys) if keys else {}
        missing = [k for k in keys if k not in found]
        if missing:
            raise ValueError(
                f"shuffle buffer state: {len(missing)} samples not found again, e.g. {missing[:3]}"
            )
        self.slots = [(key, found[key]) for key in keys]
        self.emitted = int(state["emitted"])
