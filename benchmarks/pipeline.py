"""Input-pipeline throughput for `make bench`: tokenizer, JPEG preprocessing, the demo's CIFAR loader.

Run in a fresh process by benchmarks.run (`python -m benchmarks.pipeline --threads 2 [--smoke]`, one JSON line):
- tokenizer: benchmarks.tokenizer_bench's cold and warm rows (all corpora; smoke: 1,000 texts of each);
- preprocessing: each COCO photo opened and turned into a (3, 224, 224) tensor by clipforge (`load_image` +
  `Preprocess`, full decode and JPEG draft decode) and by open_clip's eval transform; tensors compared;
- loader: `labelled_loader` on the decoded CIFAR-10 training images with the demo's batch and augmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchmarks.cases import SHARED
from benchmarks.text_corpora import CORPORA
from benchmarks.tokenizer_bench import benchmark as tokenizer_benchmark


def tokenizer_throughput(smoke: bool) -> list[dict]:
    """COCO in full and 5,000 texts of each variant (smoke: 1,000 of each, 1 round)."""
    limits = {name: 1000 if smoke else (None if name == "coco" else 5000) for name in CORPORA}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tokenizers run on one thread (torch only concatenates)
    try:
        return tokenizer_benchmark(limits, batch_size=1024, rounds=1 if smoke else 3)
    finally:
        torch.set_num_threads(threads)


def preprocess_throughput(n: int, rounds: int) -> dict:
    import open_clip
    from PIL import Image

    from clipforge.models import get_config
    from clipforge.transforms import Preprocess, load_image

    paths = sorted((SHARED / "coco_captions_mini" / "images").rglob("*.jpg"))[:n]
    config = get_config("ViT-B-32").preprocess
    ours = Preprocess(config)
    theirs = open_clip.image_transform(config.image_size, is_train=False)

    def open_clip_one(path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            return theirs(image)

    libraries = {
        "clipforge": lambda p: ours(load_image(p, config.image_size, draft=False)),
        "clipforge (JPEG draft)": lambda p: ours(load_image(p, config.image_size, draft=True)),
        "open_clip": open_clip_one,
    }
    reference = torch.stack([open_clip_one(p) for p in paths])
    rows = {}
    for lib, fn in libraries.items():
        diff = (torch.stack([fn(p) for p in paths]) - reference).abs().max().item()
        rows[lib] = {"max_abs_diff_vs_open_clip": round(diff, 6), "times": []}
    for _ in range(rounds):  # interleaved so machine load hits every library alike
        for lib, fn in libraries.items():
            start = time.perf_counter()
            for path in paths:
                fn(path)
            rows[lib]["times"].append(time.perf_counter() - start)
    out = {}
    for lib, row in rows.items():
        times = sorted(row.pop("times"))
        out[lib] = {**row, "images_per_s": round(len(paths) / times[len(times) // 2], 1)}
    return {"images": len(paths), "libraries": out}


def loader_throughput(batches: int) -> dict:
    from clipforge.data import open_labelled_dataset
    from clipforge.data.loader import LabelledLoaderConfig, labelled_loader
    from clipforge.recipes.demo import DemoConfig

    demo = DemoConfig()
    data = open_labelled_dataset(SHARED / "cifar10-wds", "train", progress=False)
    config = LabelledLoaderConfig(batch_size=demo.batch_size, seed=demo.seed, context_length=16)
    loader = iter(labelled_loader(data, config))
    next(loader)  # warm-up: first batch starts the prefetch thread
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        count += len(next(loader)["index"])
    return {"batch_size": demo.batch_size, "images_per_s": round(count / (time.perf_counter() - start), 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    report = {
        "tokenizer": tokenizer_throughput(args.smoke),
        "preprocess": preprocess_throughput(10 if args.smoke else 60, 1 if args.smoke else 3),
        "loader": loader_throughput(2 if args.smoke else 12),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
