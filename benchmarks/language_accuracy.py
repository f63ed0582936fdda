"""Recipe (c) variants toward #17's targets, chosen on selection data only (cached features, seconds per variant).

Step 1 caches, once: EfficientNet-Lite0 pooled features at SIZE px of the 5,500 Flickr8k train images (the
recipe's 500-image hold-out kept apart; view 0 = plain resize plus VIEWS-1 random resized crops + flips),
MiniLM-L6 features of all their captions, and the validation splits (the sets' few-shot `train` splits,
CIFAR-10 train 500, tiny-imagenet train 600). Step 2 trains heads per variant and reports held-out
text->image recall and validation zero-shot top-1. No test split is touched.

    .venv/bin/python -m benchmarks.language_accuracy cache 224 3 runs/acc224.pt
    .venv/bin/python -m benchmarks.language_accuracy grid runs/acc224.pt
"""

from __future__ import annotations

import sys

import torch

from benchmarks.language_heads import VALIDATION, contrastive_step, text_features, towers


def cache(size: int, views: int, path: str) -> None:
    """All 5,500 train images at `size` px with `views` views (benchmarks.language_heads.cache)."""
    from benchmarks.language_heads import cache as cache_features

    cache_features(5500, path, size, views)


# ---- step 2: heads on the cache -------------------------------------------------------------------------
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


class Heads(nn.Module):
    """image: linear (or MLP) 1280 -> E; text: `linear` 384 -> E, `identity` (MiniLM's space, E = 384),
    `residual` (identity + a rank-r map learned from zero) or `anchored` (initialised to identity, penalised)."""

    def __init__(self, embed_dim: int, text: str, rank: int = 32, mlp: bool = False):
        super().__init__()
        embed_dim = 384 if text != "linear" else embed_dim
        self.image = (
            nn.Sequential(nn.Linear(1280, 1024), nn.GELU(), nn.Linear(1024, embed_dim))
            if mlp
            else nn.Linear(1280, embed_dim, bias=False)
        )
        self.mode = text
        if text == "linear":
            self.text = nn.Linear(384, embed_dim, bias=False)
        elif text == "anchored":
            self.text = nn.Linear(384, 384, bias=False)
            self.text.weight.data = torch.eye(384)
        elif text == "residual":
            self.down = nn.Linear(384, rank, bias=False)
            self.up = nn.Linear(rank, 384, bias=False)
            nn.init.zeros_(self.up.weight)

    def encode_image(self, x):
        return F.normalize(self.image(x.float()), dim=-1)

    def encode_text(self, x):
        x = x.float()
        if self.mode in ("linear", "anchored"):
            x = self.text(x)
        elif self.mode == "residual":
            x = x + self.up(self.down(x))
        return F.normalize(x, dim=-1)

    def penalty(self):
        if self.mode == "anchored":
            return (self.text.weight - torch.eye(384)).pow(2).sum()
        return torch.zeros(())


def train(store, embed_dim=256, text="linear", epochs=10, lr=1e-3, wd=0.1, batch=256, views=None, rank=32,
          anchor=1.0, mlp=False, temperature=None, captions=5, seed=0, limit=None):  # fmt: skip
    torch.manual_seed(seed)
    images, texts = store["train"]["img"].float(), store["train"]["txt"].float()  # (N, V, D), (5N, W)
    if limit:
        images, texts = images[:limit], texts[: 5 * limit]
    images = images[:, None] if images.dim() == 2 else images  # (N, V, D)
    images = images[:, : views or images.shape[1]]
    per_image = torch.arange(len(texts)).view(len(images), 5)[:, :captions]
    heads = Heads(embed_dim, text, rank, mlp)
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07 if temperature is None else temperature)))
    params = [p for p in heads.parameters() if p.requires_grad] + ([log_scale] if temperature is None else [])
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    per_epoch = len(images) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=round(epochs * per_epoch),
                                                   pct_start=0.05)  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    for _ in range(math.ceil(epochs)):
        order = torch.randperm(len(images), generator=generator)
        for step in range(per_epoch):
            if schedule.last_epoch >= schedule.total_steps:
                break
            rows = order[step * batch : (step + 1) * batch]
            pick = torch.randint(per_image.shape[1], (len(rows),), generator=generator)
            view = torch.randint(images.shape[1], (len(rows),), generator=generator)
            logits = (
                log_scale.exp().clamp(max=100)
                * heads.encode_image(images[rows, view])
                @ heads.encode_text(texts[per_image[rows, pick]]).T
            )
            loss = contrastive_step(optimizer, schedule, logits, anchor * heads.penalty())
    return heads.eval(), float(loss)


_PROMPTS: dict = {}


@torch.no_grad()
def gap_means(store, heads):
    train = store["train"]
    images = train["img"][:, 0] if train["img"].dim() == 3 else train["img"]
    return heads.encode_image(images).mean(0), heads.encode_text(train["txt"]).mean(0)


@torch.no_grad()
def evaluate(model, store, heads, choice=None, center=False) -> dict:
    from clipforge.evaluate.retrieval import recall_at_k
    from clipforge.recipes.prompts import prompts_for

    held = store["held"]
    held_images = held["img"][:, 0] if held["img"].dim() == 3 else held["img"]  # (N, D)
    r = recall_at_k(heads.encode_image(held_images), heads.encode_text(held["txt"]), held["cap_img"])
    out = {"t2i": [round(100 * r[f"image_retrieval_recall@{k}"], 1) for k in (1, 5, 10)]}
    for name in VALIDATION:
        c = choice if not isinstance(choice, dict) else choice.get(name)
        key = (name, c)
        if key not in _PROMPTS:
            templates = prompts_for(name, c)
            texts = [t.format(k) for k in store[name]["classes"] for t in templates]
            _PROMPTS[key] = text_features(model, texts).view(len(store[name]["classes"]), len(templates), -1)
        prompts = _PROMPTS[key]
        weights = F.normalize(
            heads.encode_text(prompts.flatten(0, 1)).view(*prompts.shape[:2], -1).mean(1), dim=-1
        )
        images = heads.encode_image(store[name]["img"])
        if center == "gap":  # the modality gap removed with Flickr8k *train* means of each side
            image_mean, text_mean = gap_means(store, heads)
            images = F.normalize(images - image_mean, dim=-1)
            weights = F.normalize(weights - text_mean, dim=-1)
        elif center:
            weights = F.normalize(weights - weights.mean(0), dim=-1)
        hits = (images @ weights.T).argmax(1) == store[name]["labels"]
        out[name[:6]] = round(100 * float(hits.float().mean()), 1)
    return out


def grid(path: str, variants: dict, center=(False, "gap"), choice=None) -> None:
    store, model = torch.load(path, weights_only=False), towers()
    for name, kwargs in variants.items():
        start = time.perf_counter()
        heads, loss = train(store, **kwargs)
        for c in center:
            row = {
                "variant": name,
                "center": c,
                "loss": round(loss, 2),
                **evaluate(model, store, heads, choice, c),
            }
            print(json.dumps({**row, "s": round(time.perf_counter() - start, 1)}), flush=True)


def prompts(path: str, kwargs: dict) -> None:
    """Each candidate prompt set (recipes.prompts.candidates) per validation set, on one trained head."""
    from clipforge.recipes.prompts import candidates

    store, model = torch.load(path, weights_only=False), towers()
    heads, _ = train(store, **kwargs)
    for name in VALIDATION:
        row = {}
        for c in candidates(name):
            if name == "tiny-imagenet" and c in ("paper", "imagenet80", "flickr+paper"):
                continue  # 200 classes x 80 templates: too many prompts for this host
            row[c] = evaluate(model, store, heads, {name: c})[name[:6]]
        print(name, json.dumps(row), flush=True)


GRID = {
    "base": {}, "identity": {"text": "identity"}, "residual32": {"text": "residual"},
    "anchored1": {"text": "anchored", "anchor": 1.0}, "anchored0.01": {"text": "anchored", "anchor": 0.01},
    "identity_views1": {"text": "identity", "views": 1}, "base_views1": {"views": 1},
    "identity_e20": {"text": "identity", "epochs": 20}, "identity_e5": {"text": "identity", "epochs": 5},
    "identity_mlp": {"text": "identity", "mlp": True}, "base_E512": {"embed_dim": 512},
    "identity_t30": {"text": "identity", "temperature": 30}, "identity_lr3e-4": {"text": "identity", "lr": 3e-4},
    "identity_wd1": {"text": "identity", "wd": 1.0}, "identity_e40": {"text": "identity", "epochs": 40},
}  # fmt: skip


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    torch.set_num_threads(
        2 if command == "cache" else 1
    )  # heads: tiny ops, 2 threads only wait on a busy host
    if command == "cache":
        cache(int(rest[0]), int(rest[1]), rest[2])
    elif command == "prompts":
        prompts(rest[0], GRID[rest[1]] if len(rest) > 1 else {"text": "identity"})
    elif command == "grid":
        names = rest[1].split(",") if len(rest) > 1 else list(GRID)
        grid(rest[0], {n: GRID[n] for n in names})
