"""Micro-batching: concurrent requests are queued and run through the model as one batch.

A worker task takes the first waiting item, then keeps collecting until `max_batch` items or
`max_wait_s` has passed, runs `fn(items)` in a single worker thread (the event loop stays free), and
resolves every request's future with its own result.

The queue is bounded and ordered: `submit_many` refuses work beyond `max_queue` items (`QueueFull`, a 503
for the service) instead of letting a flood grow memory and latency without limit, and items carry a
priority -- the service uses the request's number of texts -- so a one-prompt search is not stuck behind
a 2,000-prompt label flood (smallest job first; a starved big job ends at its request time limit).
Items of a request that gave up (timed out, disconnected) are dropped unrun.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The batcher holds `max_queue` items already; the caller should answer 'busy, retry later'."""


class BatcherStopped(Exception):
    """The service is shutting down; queued work will not run."""


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    refused: int = 0  # items refused because the queue was full
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def to_dict(self) -> dict:
        mean = self.items / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "items": self.items,
            "largest_batch": self.largest_batch,
            "mean_batch": round(mean, 2),
            "refused": self.refused,
        }


class MicroBatcher:
    """`await batcher.submit(item)` -> `fn([..., item, ...])[its position]`."""

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        executor: ThreadPoolExecutor | None = None,
        name: str = "batch",
        max_queue: int | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_queue is not None and max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.fn, self.max_batch, self.max_wait_s, self.name = fn, max_batch, max_wait_s, name
        self.executor, self.max_queue = executor, max_queue
        self.stats = BatchStats()
        self._queue: asyncio.PriorityQueue | None = None
        self._worker: asyncio.Task | None = None
        self._order = itertools.count()  # FIFO among equal priorities
        self._stopped = False
        self._running: list[tuple[Any, asyncio.Future]] = []  # the batch the model thread has now

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        if self._worker is None:
            self._stopped = False
            self._queue = asyncio.PriorityQueue()
            self._worker = asyncio.create_task(self._run(), name=f"microbatch-{self.name}")

    async def stop(self) -> None:
        """Stop the worker; every queued request gets BatcherStopped (the service answers 503)."""
        self._stopped = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        waiting = [future for _, future in self._running]
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait()[-1])
        for future in waiting:
            if not future.done():
                future.set_exception(BatcherStopped(f"{self.name}: the service is shutting down"))
        self._running = []

    async def submit(self, item: Any, priority: int = 0) -> Any:
        return (await self.submit_many([item], priority))[0]

    async def submit_many(self, items: Sequence[Any], priority: int = 0) -> list[Any]:
        """All of `items` (one request's work) or QueueFull, never part of them."""
        if self._stopped:
            raise BatcherStopped(f"{self.name}: the service is shutting down")
        if self._worker is None:
            await self.start()
        if self.max_queue is not None and self._queue.qsize() + len(items) > self.max_queue:
            self.stats.refused += len(items)
            raise QueueFull(f"{self.name} queue holds {self._queue.qsize()} items (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures, strict=True):
            self._queue.put_nowait((priority, next(self._order), item, future))
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:  # the request gave up: its queued items are dropped unrun
                future.cancel()
            raise

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(item, future) for *_, item, future in batch if not future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            items = [item for item, _ in batch]
            self._running = batch
            try:
                results = await loop.run_in_executor(self.executor, self.fn, items)
                if len(results) != len(items):
                    raise RuntimeError(f"{self.name}: fn returned {len(results)} results for {len(items)}")
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                self._running = []
                continue
            self.stats.record(len(items))
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
            self._running = []
