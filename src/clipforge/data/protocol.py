"""The one loader protocol: what `clipforge.train.fit` consumes, and every training loader of clipforge.data offers.

A batch is a dict of tensors::

    {"images": (B, 3, S, S) float32,  # augmented + normalised
     "text":   (B, L) int64,          # token ids
     "index":  (B,) int64,            # sample index (streams: shard * 2**32 + offset); keys all randomness
     "labels": (B,) int64}            # optional; -1 when unknown

A loader is one rank's view of the training set, an epoch at a time:

- `set_epoch(epoch)`: the next iteration yields epoch `epoch` from its start.
- `iter(loader)`: the batches of the current epoch from the current position on; the position advances as
  each batch is *handed out* (prefetching threads or workers do not move it).
- `state_dict()`: the position after the last batch handed out, as plain values (ints, strings, lists, dicts)
  so it travels inside a `weights_only` checkpoint; a stream stores one position per worker here.
  `load_state_dict(state)` restores it: the next iteration yields exactly the batches an uninterrupted run
  would have yielded next. The trainer saves one state per rank in its checkpoint and gives each rank its own
  back on resume.
- `batch_size` (samples per batch of this rank) and `batches_per_epoch` (equal on every rank, so ranks step
  together; the trainer ends the epoch after that many batches, or earlier with a warning if the loader runs dry).

Optional, used when present: `skips` (a `SkipCounter`: samples dropped by reason, reported in the results),
`classes` (class names of labelled data, [] for image–text pairs) and `caption_texts` (every caption the loader
can produce; objectives that predict words build their vocabulary from it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

Batch = dict[str, Tensor]
PROTOCOL_METHODS = ("set_epoch", "__iter__", "state_dict", "load_state_dict")


@runtime_checkable
class TrainData(Protocol):
    batch_size: int
    batches_per_epoch: int

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def check_train_data(data: Any) -> TrainData:
    """`data` itself when it implements the protocol, else a TypeError saying what is missing."""
    missing = [
        name for name in (*PROTOCOL_METHODS, "batch_size", "batches_per_epoch") if not hasattr(data, name)
    ]
    if missing:
        raise TypeError(
            f"train_data {type(data).__name__} lacks {', '.join(missing)}: a training loader needs set_epoch, "
            "__iter__, state_dict, load_state_dict, batch_size and batches_per_epoch (see clipforge.data.protocol)"
        )
    return data
