"""Shared by the apps/serve/ONNX tests (no tests here): a tiny CLIP trained for seconds on CIFAR-10.

Training: tiny-vit, the 5,000 images of ../shared/data/cifar10 train (random flips), one caption per class
("a photo of a {class}."); the loss is cross-entropy of each image against the ten caption embeddings,
which is CLIP's image->text contrastive loss with the duplicate captions of a batch merged. 400 steps of
128 (AdamW, warmup + cosine) reach ~38% zero-shot top-1 on the test split (chance 10%) in well under a
minute on one CPU thread. The state dict is cached in pytest's shared temp folder under a file lock, so
one test session trains it once whatever the number of xdist workers."""

from __future__ import annotations

import csv
import fcntl
import math
from pathlib import Path

import torch
import torch.nn.functional as F

import clipforge
from clipforge.fileio import atomic_write
from clipforge.transforms import Preprocess

TEMPLATE = "a photo of a {}."
RECIPE = "v2"  # bump when train_tiny_clip changes, so no stale cached model is used


def cifar_rows(shared_data: Path, split: str) -> list[dict]:
    with (shared_data / "cifar10" / f"{split}.csv").open() as f:
        return list(csv.DictReader(f))


def cifar_classes(shared_data: Path) -> list[str]:
    return (shared_data / "cifar10" / "classes.txt").read_text().split()


def load_images(shared_data: Path, rows: list[dict], preprocess) -> torch.Tensor:
    from PIL import Image

    root = shared_data / "cifar10"
    return torch.stack([preprocess(Image.open(root / r["path"]).convert("RGB")) for r in rows])


def train_tiny_clip(shared_data: Path, steps: int = 400, batch_size: int = 128, seed: int = 0):
    torch.manual_seed(seed)
    model = clipforge.create_model("tiny-vit").train()
    preprocess = Preprocess(model.config.preprocess)
    rows = cifar_rows(shared_data, "train")
    images = load_images(shared_data, rows, preprocess)  # (N, 3, 32, 32)
    labels = torch.tensor([int(r["label"]) for r in rows])
    tokens = clipforge.tokenize([TEMPLATE.format(c) for c in cifar_classes(shared_data)])  # (10, 77)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    warmup = 30
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(rows), (batch_size,), generator=generator)
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], images[idx].flip(-1), images[idx])
        loss = F.cross_entropy(model(batch, tokens).logits_per_image(), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def cached_tiny_clip(shared_data: Path, cache_dir: Path):
    """The trained tiny model, trained once per test session (file cache shared by xdist workers)."""
    path = cache_dir / f"clipforge-apps-tiny-vit-{RECIPE}.pt"
    with (cache_dir / f"{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other xdist workers wait for the first one's training
        if not path.is_file():
            state = train_tiny_clip(shared_data).state_dict()
            atomic_write(path, lambda f: torch.save(state, f))
    model = clipforge.create_model("tiny-vit")
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()
