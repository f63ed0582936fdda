"""Throughput of the data path: decode (images/s), cache reload (s), in-memory loader and streaming (images/s).

`python -m benchmarks.data_throughput [--shards ../shared/data/cifar10-wds] [--cache-dir /tmp/cfbench]` prints
one JSON object; docs/data.md shows the numbers measured with it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from clipforge.data.augment import AugmentConfig
from clipforge.data.cache import cached_shards
from clipforge.data.loader import LabelledLoaderConfig, labelled_loader
from clipforge.data.public import open_labelled_dataset
from clipforge.data.webdataset import ShardLoader, ShardStream, StreamConfig


def _loader_rate(loader, max_batches: int) -> float:
    count, start = 0, time.perf_counter()
    for step, batch in enumerate(loader):
        count += len(batch["index"])
        if step + 1 == max_batches:
            break
    return count / (time.perf_counter() - start)


def measure_throughput(
    shards: str | Path,
    cache_dir: str | Path,
    batch_size: int = 256,
    num_workers: int = 2,
    max_batches: int = 60,
) -> dict:
    """Decode from scratch (cache cleared), reload from cache, then loader and stream rates."""
    cache_dir = Path(cache_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)
    start = time.perf_counter()
    decoded = cached_shards(shards, cache_dir, num_workers=num_workers, progress=False)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    data = open_labelled_dataset(shards, "train", cache_dir=cache_dir, progress=False)
    reload_s = time.perf_counter() - start
    results = {
        "images": len(decoded),
        "decode_workers": num_workers,
        "decode_images_per_s": len(decoded) / decode_s,
        "cache_reload_s": reload_s,
        "torch_threads": torch.get_num_threads(),
    }
    for kind in ("crop_flip", "resized_crop_flip"):
        for prefetch in (0, 2):
            config = LabelledLoaderConfig(
                batch_size, context_length=16, augment=AugmentConfig(kind), prefetch=prefetch
            )
            results[f"loader_{kind}_prefetch{prefetch}_images_per_s"] = _loader_rate(
                labelled_loader(data, config), max_batches
            )
    results["stream_workers"] = num_workers
    results["stream_images_per_s"] = _loader_rate(
        _labelled_stream(shards, batch_size, data.classes, num_workers), 40
    )
    return results


def _labelled_stream(shards, batch_size: int, classes: list[str], num_workers: int) -> ShardLoader:
    from clipforge.data.captions import PromptCaptioner

    captioner = PromptCaptioner(classes, context_length=16)
    _ = captioner.token_table  # tokenise once, before the workers fork
    stream = ShardStream(shards, StreamConfig(batch_size=batch_size), captioner=captioner)
    return ShardLoader(stream, num_workers=num_workers)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", default="../shared/data/cifar10-wds")
    parser.add_argument("--cache-dir", default="/tmp/cfbench")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = measure_throughput(args.shards, args.cache_dir)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
