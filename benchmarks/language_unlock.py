"""Recipe (c) with EfficientNet-Lite0's last block group unlocked vs locked, scored on validation data only.

Step 1 caches the trunk's input to its last block group (blocks[6]: 192x7x7 at 224 px, float16) for the demo's
5,500 Flickr8k train images (3 views: plain + 2 random resized crops with flips, as the demo), the 500 held-out
train images and the validation splits of benchmarks.language_heads (imagenette, flowers5, tiny-imagenet `train`,
CIFAR-10 `train`). Step 2 trains, per variant, the image projection into MiniLM's space (the text side stays
MiniLM's own, as the demo) with the last block group, conv_head and bn2 either locked or trained at `trunk_lr`
(BatchNorm statistics frozen), 10 epochs, and reports held-out text->image recall and validation zero-shot top-1
with the demo's prompt sets. No test split is touched.

    .venv/bin/python -m benchmarks.language_unlock cache runs/unlock.pt
    .venv/bin/python -m benchmarks.language_unlock run runs/unlock.pt   # -> benchmarks/results/language_unlock.*
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import machine_info
from benchmarks.language_heads import VALIDATION, contrastive_step, evaluate, text_features, towers
from clipforge.results import markdown_table, write_results

SPLIT = 6  # trunk.blocks[:SPLIT] stay locked and are cached; the rest is the part that may train
VARIANTS = [
    {"variant": "locked", "trunk_lr": 0.0, "seed": 0},
    {"variant": "locked", "trunk_lr": 0.0, "seed": 1},
    {"variant": "unlocked", "trunk_lr": 1e-4, "seed": 0},
    {"variant": "unlocked", "trunk_lr": 1e-4, "seed": 1},
    {"variant": "unlocked", "trunk_lr": 3e-5, "seed": 0},
]


@torch.no_grad()
def block_inputs(model, images, views: int, augment, seed: int = 0) -> torch.Tensor:
    """(N, V, 192, 7, 7) float16: the trunk's activations before blocks[SPLIT], view 0 plain, then crops + flips."""
    from clipforge.data.augment import augment_batch, eval_batch
    from clipforge.recipes.frozen import gray_to_rgb

    trunk = model.visual.trunk.eval()
    out = []
    for view in range(views):
        for start in range(0, len(images), 100):
            index = torch.arange(start, min(start + 100, len(images)))
            x = gray_to_rgb(torch.as_tensor(images[index]))
            if view == 0:
                x = eval_batch(x, augment.image_size, augment.mean, augment.std)
            else:
                x = augment_batch(x, index, view, seed, augment)
            x = trunk.bn1(trunk.conv_stem(x))  # (B, 32, 112, 112)
            out.append(trunk.blocks[:SPLIT](x).half())  # (B, 192, 7, 7)
    return torch.cat(out).view(views, len(images), *out[0].shape[1:]).transpose(0, 1)


def cache(path: str) -> None:
    from clipforge.recipes.flickr import hold_out, load_flickr8k
    from clipforge.recipes.frozen import view_config
    from clipforge.recipes.unseen import SHARED, UNSEEN_SETS, load_set

    model = towers()
    train, held = hold_out(load_flickr8k(SHARED / "flickr8k", "train"), 500, 0)
    augment, store = view_config(model, 224), {}
    for name, part, views in (("held", held, 1), ("train", train, 3)):
        images = block_inputs(model, part.images, views, augment)
        store[name] = {
            "img": images[:, 0] if views == 1 else images,
            "txt": text_features(model, part.flat_captions),
            "cap_img": part.caption_image,
        }
    for spec in UNSEEN_SETS:
        if spec.name in VALIDATION:
            data, names = load_set(spec, spec.validation_split, VALIDATION[spec.name])
            images = block_inputs(model, data.images, 1, augment)[:, 0]
            store[spec.name] = {"img": images, "labels": data.labels, "classes": names}
    torch.save(store, path)


class TopHeads(nn.Module):
    """The trunk's last block group + a linear map into MiniLM's space; the text side is MiniLM's own."""

    def __init__(self, model, unlock: bool):
        super().__init__()
        trunk = model.visual.trunk
        self.top = nn.Sequential(*trunk.blocks[SPLIT:], trunk.conv_head, trunk.bn2, nn.AdaptiveAvgPool2d(1))
        self.top.eval().requires_grad_(unlock)  # BatchNorm statistics stay ImageNet's either way
        self.unlock = unlock
        self.image = nn.Linear(1280, 384, bias=False)

    def train(self, mode: bool = True):
        self.image.train(mode)
        return self

    def encode_image(self, blocks: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.unlock):
            pooled = self.top(blocks.float()).flatten(1)  # (B, 192, 7, 7) -> (B, 1280)
        return F.normalize(self.image(pooled), dim=-1)

    def encode_text(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features.float(), dim=-1)


def train(store, model, trunk_lr: float, seed: int, epochs=10, lr=1e-3, wd=0.1, batch=256):
    torch.manual_seed(seed)
    heads = TopHeads(model, unlock=trunk_lr > 0)
    images, texts = store["train"]["img"], store["train"]["txt"]
    captions = torch.arange(len(texts)).view(len(images), 5)
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    groups = [{"params": [heads.image.weight, log_scale], "lr": lr}]
    if trunk_lr > 0:
        groups.append({"params": list(heads.top.parameters()), "lr": trunk_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=wd)
    per_epoch = len(images) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, [g["lr"] for g in groups], total_steps=epochs * per_epoch, pct_start=0.05
    )
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for step in range(per_epoch):
            rows = order[step * batch : (step + 1) * batch]
            pick = torch.randint(5, (len(rows),), generator=generator)
            view = torch.randint(images.shape[1], (len(rows),), generator=generator)
            image = heads.encode_image(images[rows, view])
            logits = log_scale.exp().clamp(max=100) * image @ heads.encode_text(texts[captions[rows, pick]]).T
            loss = contrastive_step(optimizer, schedule, logits)
    return heads.eval(), float(loss)


def run(path: str, out_dir: str = "benchmarks/results") -> dict:
    from clipforge.recipes.prompts import CHOSEN

    store, model = torch.load(path, weights_only=False), towers()
    rows = []
    for variant in VARIANTS:
        start = time.perf_counter()
        heads, loss = train(store, towers(), variant["trunk_lr"], variant["seed"])
        scores = evaluate(model, store, heads, CHOSEN)
        rows.append(
            {**variant, "loss": round(loss, 2), **scores, "train_s": round(time.perf_counter() - start)}
        )
        print(rows[-1], flush=True)
    results = {"rows": rows, "train_images": len(store["train"]["img"]), "machine": machine_info(2)}
    summary = (
        "# Recipe (c): EfficientNet-Lite0's last block group locked vs unlocked (validation data only)\n\n"
        + "5,500 Flickr8k train images (3 cached views at 224 px, 5 captions each), 10 epochs, image projection "
        + "into MiniLM-L6's space, BatchNorm statistics frozen; held-out = 500 Flickr8k train images; zero-shot "
        + "top-1 on the validation splits with the demo's prompt sets. Commands: `python -m "
        + "benchmarks.language_unlock cache runs/unlock.pt` then `... run runs/unlock.pt`.\n\n"
        + markdown_table(rows, floatfmt="g")
    )
    write_results(out_dir, "language_unlock", results, summary)
    return results


def main(argv: list[str]) -> None:
    torch.set_num_threads(2)
    command, path = argv
    cache(path) if command == "cache" else run(path)


if __name__ == "__main__":
    main(sys.argv[1:])
