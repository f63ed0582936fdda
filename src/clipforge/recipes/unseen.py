"""Zero-shot transfer to label sets never seen in training, and Flickr8k retrieval: the caption recipes' report.

`UNSEEN_SETS` are the labelled sets of ../shared/data (imagenette, tiny-imagenet, flowers5, mnist, cifar10).
`evaluate_unseen(model, ...)` gives, per set, prompt-ensembled zero-shot top-1 with a bootstrap 95% interval,
and Flickr8k val recall@1/5/10 in both directions (5 captions per image, ties counted against the positive).
Big test splits may be capped at a seeded, class-stratified subset (`max_images`); the result says so (`n`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


@dataclass(frozen=True)
class UnseenSet:
    name: str
    folder: str  # under ../shared/data
    validation_split: str | None  # a split to choose prompts on (never the test split)
    words: bool = False  # class names from classes.tsv's third column (mnist: "zero" ... "nine")


UNSEEN_SETS = (
    UnseenSet("imagenette", "zeroshot/imagenette", "train"),
    UnseenSet("tiny-imagenet", "zeroshot/tiny-imagenet", "train"),
    UnseenSet("flowers5", "zeroshot/flowers5", "train"),
    UnseenSet("mnist", "zeroshot/mnist", None),
    UnseenSet("cifar10", "cifar10", "train"),
)


def class_names(root: Path, words: bool = False) -> list[str]:
    """classes.txt (or classes.tsv's third column when `words`)."""
    if words and (root / "classes.tsv").is_file():
        rows = [line.split("\t") for line in (root / "classes.tsv").read_text().splitlines() if line.strip()]
        return [row[2] if len(row) > 2 else row[-1] for row in rows]
    return [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]


def stratified_subset(labels: Tensor, max_images: int | None, seed: int = 0) -> Tensor:
    """Sorted indices of at most `max_images` samples, the same fraction of every class (seeded)."""
    if max_images is None or len(labels) <= max_images:
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        count = max(1, round(len(members) * max_images / len(labels)))
        keep.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(keep).sort().values


def load_set(spec: UnseenSet, split: str, max_images: int | None, root: Path = SHARED, seed: int = 0):
    """(LabelledArrays subset, class names) of one set's split."""
    from clipforge.data import LabelledArrays, open_labelled_dataset

    folder = root / spec.folder
    data = open_labelled_dataset(folder, split, progress=False)
    index = stratified_subset(data.labels, max_images, seed)
    images = data.images[index]
    if images.shape[-1] == 1:
        images = images.expand(-1, -1, -1, 3)
    subset = LabelledArrays(images.contiguous(), data.labels[index], list(data.classes), data.source)
    return subset, class_names(folder, spec.words)


@torch.no_grad()
def encode_arrays(model, images: Tensor, batch_size: int = 250) -> Tensor:
    """(N, H, W, 3) uint8 -> (N, E) unit image embeddings, resized and normalised as the model's preprocess says."""
    from clipforge.data.augment import eval_batch
    from clipforge.recipes.frozen import image_feature_cache, onnx_trunk_available, view_config

    pre = model.config.preprocess
    model.eval()
    if onnx_trunk_available(model):  # a locked timm trunk: onnxruntime (~2.5x), then the trained projection
        features = image_feature_cache(
            model, images, 1, view_config(model), batch_size=batch_size, progress=False
        )
        return F.normalize(
            model.visual.project(features[:, 0].float()), dim=-1
        )  # (float16 features, as trained)
    out = []
    for start in range(0, len(images), batch_size):
        batch = eval_batch(images[start : start + batch_size], pre.image_size, pre.mean, pre.std)
        out.append(model.encode_image(batch, normalize=True).float())
    return torch.cat(out)


def top1_with_interval(logits: Tensor, labels: Tensor, samples: int = 1000) -> dict[str, float]:
    from clipforge.evaluate.metrics import bootstrap_ci

    correct = (logits.argmax(dim=1) == labels).float()
    low, high = bootstrap_ci(lambda index: float(correct[index].mean()), len(correct), samples=samples)
    return {"top1": float(correct.mean()), "ci95": [low, high]}


def zeroshot_set(model, spec: UnseenSet, templates: list[str], max_images: int | None, split: str = "test"):
    """Prompt-ensembled zero-shot top-1 of one set (with its bootstrap interval, n, classes)."""
    from clipforge.zeroshot.classifier import build_classifier

    data, names = load_set(spec, split, max_images)
    classifier = build_classifier(model, names, templates, cache_dir=False, progress=False)  # (E, C)
    logits = encode_arrays(model, data.images) @ classifier
    result = top1_with_interval(logits, data.labels)
    return {**result, "n": len(data.labels), "classes": len(names), "chance": 1 / len(names), "split": split}


def flickr_retrieval(
    model, root: Path = SHARED, split: str = "val", max_images: int | None = None
) -> dict[str, dict[str, float]]:
    """Flickr8k recall@1/5/10: text->image (`image_retrieval`) and image->text (`text_retrieval`); the
    first `max_images` images (all 1,000 of val by default) with all their captions."""
    from clipforge.recipes.flickr import load_flickr8k

    data = load_flickr8k(root / "flickr8k", split)
    if max_images is not None and max_images < len(data):
        data = data.subset(torch.arange(max_images))
    return held_out_retrieval(model, data)


def held_out_retrieval(model, data) -> dict[str, dict[str, float]]:
    """Recall@1/5/10 both ways on CaptionedImages (all captions of each image are its positives)."""
    from clipforge.encode import encode_texts
    from clipforge.evaluate.retrieval import recall_at_k

    image_features = encode_arrays(model, data.images)
    text_features = encode_texts(model, data.flat_captions, normalize=True)
    got = recall_at_k(image_features, text_features, data.caption_image, ks=(1, 5, 10))
    return {
        "text_to_image": {f"R@{k}": got[f"image_retrieval_recall@{k}"] for k in (1, 5, 10)},
        "image_to_text": {f"R@{k}": got[f"text_retrieval_recall@{k}"] for k in (1, 5, 10)},
        "images": len(data.images),
        "captions": len(data.flat_captions),
    }


def eval_image_count(max_images: int | None, sets=UNSEEN_SETS, root: Path = SHARED) -> int:
    """Images `evaluate_unseen` will encode (test splits, capped) plus Flickr8k val's 1,000."""
    total = 1000 if max_images is None else min(1000, max_images)
    for spec in sets:
        table = root / spec.folder / "test.csv"
        count = len(table.read_text(encoding="utf-8").splitlines()) - 1 if table.is_file() else 0
        total += count if max_images is None else min(count, max_images)
    return total


def evaluate_unseen(
    model,
    templates: dict[str, list[str]],
    max_images: int | None = None,
    sets=UNSEEN_SETS,
    retrieval: bool = True,
) -> dict:
    """{"zeroshot": {set: {top1, ci95, n, classes, chance}}, "retrieval": {direction: {R@k}}}."""
    zeroshot = {spec.name: zeroshot_set(model, spec, templates[spec.name], max_images) for spec in sets}
    out = {"zeroshot": zeroshot}
    if retrieval:
        out["retrieval"] = flickr_retrieval(model, max_images=max_images)
    return out
