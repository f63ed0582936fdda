"""Choosing the "pretrained" caption recipe on selection data only: projection heads on cached frozen features.

Step 1 caches EfficientNet-Lite0 (128 px) and MiniLM-L6 features of N Flickr8k train images (after the
recipe's 500-image hold-out), the held-out images, and the few-shot *train* splits of imagenette, flowers5,
tiny-imagenet (600) and cifar10's train split (500). Step 2 trains the two linear heads per variant (seconds)
and reports held-out text->image recall and validation zero-shot top-1; `prompts` compares prompt sets.
No test split is touched. Results quoted in docs/language.md and recipes/prompts.py.

    .venv/bin/python -m benchmarks.language_heads cache 1500 runs/heads.pt
    .venv/bin/python -m benchmarks.language_heads heads runs/heads.pt
    .venv/bin/python -m benchmarks.language_heads prompts runs/heads.pt
"""

from __future__ import annotations

import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

VALIDATION = {"imagenette": None, "flowers5": None, "cifar10": 500, "tiny-imagenet": 600}


def towers():
    from clipforge.checkpoints.towers import load_image_tower, load_text_tower
    from clipforge.models import CLIP, get_config

    model = CLIP(get_config("lite0-minilm")).eval()
    load_image_tower(model, "efficientnet-lite0")
    load_text_tower(model, "all-MiniLM-L6-v2")
    return model


@torch.inference_mode()
def text_features(model, texts: list[str]) -> torch.Tensor:
    from clipforge.tokenizer import tokenizer_for

    tokens = tokenizer_for(model)(texts)
    order = (tokens != 0).sum(1).argsort()  # length-sorted batches: less padding
    out = torch.empty(len(texts), model.text.transformer.config.hidden_size)
    for start in range(0, len(texts), 256):
        rows = order[start : start + 256]
        out[rows] = model.text.features(tokens[rows]).float()
    return out


def cache(count: int, path: str, size: int | None = None, views: int = 1) -> None:
    """`count` train images (at most the 5,500 left after the hold-out) at `size` px (None: the preset's); with
    `views` > 1 the train features are (N, V, D): view 0 plain, then random resized crops + flips."""
    from clipforge.recipes.flickr import hold_out, load_flickr8k
    from clipforge.recipes.frozen import image_feature_cache, view_config
    from clipforge.recipes.unseen import SHARED, UNSEEN_SETS, load_set

    model = towers()
    train, held = hold_out(load_flickr8k(SHARED / "flickr8k", "train"), 500, 0)
    train = train.subset(torch.arange(min(count, len(train))))
    augment, store = view_config(model, size), {"size": size}
    for name, part, count_views in (("held", held, 1), ("train", train, views)):
        images = image_feature_cache(model, part.images, count_views, augment, progress=False)
        store[name] = {
            "img": images[:, 0] if count_views == 1 else images,
            "txt": text_features(model, part.flat_captions),
            "cap_img": part.caption_image,
        }
        torch.save(store, path)
    for spec in UNSEEN_SETS:
        if spec.name in VALIDATION:
            data, names = load_set(spec, spec.validation_split, VALIDATION[spec.name])
            images = image_feature_cache(model, data.images, 1, augment, progress=False)[:, 0]
            store[spec.name] = {"img": images, "labels": data.labels, "classes": names}
            torch.save(store, path)


class Heads(nn.Module):
    def __init__(self, embed_dim: int, text_identity: bool, standardize: torch.Tensor | None, mlp: bool):
        super().__init__()
        self.image = (
            nn.Sequential(nn.Linear(1280, 512), nn.GELU(), nn.Linear(512, embed_dim))
            if mlp
            else nn.Linear(1280, embed_dim, bias=False)
        )
        self.text = nn.Linear(384, embed_dim, bias=False)
        if text_identity:  # the text side stays MiniLM's own space
            self.text.weight.data = torch.eye(384)
            self.text.requires_grad_(False)
        self.register_buffer("mean", standardize[0] if standardize is not None else torch.zeros(1280))
        self.register_buffer("std", standardize[1] if standardize is not None else torch.ones(1280))

    def encode_image(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image((features.float() - self.mean) / self.std), dim=-1)

    def encode_text(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(features.float()), dim=-1)


def contrastive_step(optimizer, schedule, logits: torch.Tensor, extra: torch.Tensor | float = 0.0):
    """CLIP's symmetric cross-entropy on (B, B) logits (+ `extra`), one optimizer and schedule step; the loss."""
    target = torch.arange(len(logits))
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2 + extra
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.detach()


def train_heads(store, embed_dim=256, epochs=30, lr=1e-3, wd=0.1, batch=256, standardize=False,
                text_identity=False, temperature=None, dropout=0.0, mlp=False, one_caption=False, seed=0):  # fmt: skip
    torch.manual_seed(seed)
    images, texts = store["train"]["img"].float(), store["train"]["txt"].float()
    captions = torch.arange(len(texts)).view(len(images), 5)  # five captions per image, in order
    stats = (images.mean(0), images.std(0) + 1e-3) if standardize else None
    heads = Heads(embed_dim, text_identity, stats, mlp)
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07 if temperature is None else temperature)))
    params = [p for p in heads.parameters() if p.requires_grad] + ([log_scale] if temperature is None else [])
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    per_epoch = len(images) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, lr, total_steps=epochs * per_epoch, pct_start=0.05
    )
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for step in range(per_epoch):
            rows = order[step * batch : (step + 1) * batch]
            pick = (
                torch.zeros(len(rows), dtype=torch.long)
                if one_caption
                else torch.randint(5, (len(rows),), generator=generator)
            )
            x = F.dropout(images[rows], dropout, True) if dropout else images[rows]
            logits = (
                log_scale.exp().clamp(max=100)
                * heads.encode_image(x)
                @ heads.encode_text(texts[captions[rows, pick]]).T
            )
            loss = contrastive_step(optimizer, schedule, logits)
    return heads.eval(), float(loss)


_PROMPTS: dict = {}


@torch.no_grad()
def evaluate(model, store, heads, choices: dict[str, str]) -> dict:
    from clipforge.evaluate.retrieval import recall_at_k
    from clipforge.recipes.prompts import candidates

    held = store["held"]
    r = recall_at_k(heads.encode_image(held["img"]), heads.encode_text(held["txt"]), held["cap_img"])
    out = {"held_t2i_R@1/5/10": [round(100 * r[f"image_retrieval_recall@{k}"], 1) for k in (1, 5, 10)]}
    for name in VALIDATION:
        key = (name, choices.get(name, "plain"))
        if key not in _PROMPTS:
            templates = candidates(name)[key[1]]
            texts = [t.format(c) for c in store[name]["classes"] for t in templates]
            _PROMPTS[key] = text_features(model, texts).view(len(store[name]["classes"]), len(templates), -1)
        prompts = _PROMPTS[key]
        weights = F.normalize(
            heads.encode_text(prompts.flatten(0, 1)).view(*prompts.shape[:2], -1).mean(1), dim=-1
        )
        hits = (heads.encode_image(store[name]["img"]) @ weights.T).argmax(1) == store[name]["labels"]
        out[name] = round(100 * float(hits.float().mean()), 1)
    return out


VARIANTS = {
    "base": {}, "standardize": {"standardize": True}, "text_identity_384": {"embed_dim": 384, "text_identity": True},
    "E128": {"embed_dim": 128}, "E512": {"embed_dim": 512}, "epochs10": {"epochs": 10}, "epochs100": {"epochs": 100},
    "wd0.5": {"weight_decay": 0.5}, "lr3e-3": {"lr": 3e-3}, "temperature20": {"temperature": 20},
    "dropout0.3": {"dropout": 0.3}, "mlp": {"mlp": True}, "one_caption": {"one_caption": True},
}  # fmt: skip


def main(argv: list[str]) -> None:
    torch.set_num_threads(2)
    command, *rest = argv
    if command == "cache":
        return cache(int(rest[0]), rest[1])
    store, model = torch.load(rest[0], weights_only=False), towers()
    if command == "heads":
        for name, kwargs in VARIANTS.items():
            start = time.perf_counter()
            kwargs = {("wd" if k == "weight_decay" else k): v for k, v in kwargs.items()}
            heads, loss = train_heads(store, **kwargs)
            row = {"variant": name, "loss": round(loss, 2), **evaluate(model, store, heads, {})}
            print(json.dumps({**row, "s": round(time.perf_counter() - start, 1)}), flush=True)
    elif command == "prompts":
        from clipforge.recipes.prompts import candidates

        heads, _ = train_heads(store, epochs=10)
        for name in VALIDATION:
            row = {c: evaluate(model, store, heads, {name: c})[name] for c in candidates(name)
                   if not (name == "tiny-imagenet" and c in ("paper", "imagenet80", "flickr+paper"))}  # fmt: skip
            print(name, json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
