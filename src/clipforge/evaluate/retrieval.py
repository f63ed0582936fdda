"""Image-text retrieval Recall@K in both directions, several captions per image (COCO / Flickr30k style)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class CaptionSet:
    """Unique images and all captions; caption j describes image `caption_image[j]`."""

    image_paths: list[Path]
    captions: list[str]
    caption_image: Tensor  # (M,) index into image_paths


def load_captions(path, image_root=None, split: str | None = None) -> CaptionSet:
    """CSV with columns `path,caption` (optional `split`) or JSONL with `{"image"|"path", "caption"|"captions"}`.

    Image paths are relative to `image_root` (default: the captions file's folder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path} (CSV path,caption or JSONL image,caption)")
    root = Path(image_root) if image_root else path.parent
    pairs: list[tuple[str, str]] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            image = record.get("image") or record.get("path") or record.get("filename")
            captions = record.get("captions") or [record.get("caption")]
            if image is None or not captions or captions[0] is None:
                raise ValueError(f"{path}:{line_no}: need 'image' (or 'path') and 'caption' (or 'captions')")
            if split is None or record.get("split") == split:
                pairs += [(image, c) for c in captions]
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for column in ("path", "caption"):
                if column not in (reader.fieldnames or []):
                    raise ValueError(f"{path}: missing column {column!r}; columns are {reader.fieldnames}")
            pairs = [(r["path"], r["caption"]) for r in reader if split is None or r.get("split") == split]
    if not pairs:
        raise ValueError(f"{path}: no captions" + (f" with split={split!r}" if split else ""))
    index: dict[str, int] = {}
    for image, _ in pairs:
        index.setdefault(image, len(index))
    return CaptionSet(
        [root / p for p in index], [c for _, c in pairs], torch.tensor([index[p] for p, _ in pairs])
    )


def recall_at_k(
    image_features: Tensor,
    text_features: Tensor,
    caption_image: Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    chunk: int = 1024,
) -> dict[str, float]:
    """CLIP_benchmark keys: `image_retrieval_recall@k` (text query finds its image) and
    `text_retrieval_recall@k` (image query finds any of its captions in the top k).

    Ties count against the positive: its rank is the number of negatives scoring higher *or equal*, so a
    model that scores everything alike gets no credit (a collapsed model does not look perfect).

    image_features (N, E), text_features (M, E), unit-norm; caption_image (M,) image index per caption."""
    image_features, text_features = image_features.float(), text_features.float()
    caption_image = caption_image.to(image_features.device).long()
    num_images = image_features.shape[0]
    # text -> image: rank of the right image = other images scoring at least as high.
    text_ranks = []
    columns = torch.arange(num_images, device=image_features.device)
    for start in range(0, text_features.shape[0], chunk):
        scores = text_features[start : start + chunk] @ image_features.T  # (m, N)
        target = caption_image[start : start + chunk]
        positive = scores.gather(1, target[:, None])  # (m, 1)
        text_ranks.append(((scores >= positive) & (columns[None, :] != target[:, None])).sum(1))
    text_rank = torch.cat(text_ranks)
    # image -> text: rank of the best-scoring right caption = wrong captions scoring at least as high.
    image_ranks = []
    for start in range(0, num_images, chunk):
        scores = image_features[start : start + chunk] @ text_features.T  # (n, M)
        rows = torch.arange(start, min(start + chunk, num_images), device=scores.device)
        is_positive = caption_image[None, :] == rows[:, None]  # (n, M)
        best_positive = scores.masked_fill(~is_positive, float("-inf")).max(1, keepdim=True).values
        image_ranks.append(((scores >= best_positive) & ~is_positive).sum(1))
    image_rank = torch.cat(image_ranks)
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = float((text_rank < k).float().mean())
        out[f"text_retrieval_recall@{k}"] = float((image_rank < k).float().mean())
    return out


@torch.no_grad()
def evaluate_retrieval(
    model,
    captions: CaptionSet,
    transform,
    *,
    tokenizer=None,
    batch_size: int = 256,
    device=None,
    ks: tuple[int, ...] = (1, 5, 10),
    progress: bool = True,
) -> dict[str, float]:
    """Encode the caption set's images and captions with `model`, then `recall_at_k`."""
    from clipforge.encode import encode_tokens
    from clipforge.evaluate.datasets import EvalDataset
    from clipforge.evaluate.features import extract_features
    from clipforge.zeroshot.classifier import model_tokenizer

    images = EvalDataset([(p, 0) for p in captions.image_paths], ["image"], transform, name="captions")
    image_features, _ = extract_features(
        model, images, "embedding", batch_size=batch_size, device=device, progress=progress
    )
    tokens = (tokenizer or model_tokenizer(model))(captions.captions)
    was_training = model.training
    model.eval()
    try:
        text_features = encode_tokens(model, tokens, batch_size, normalize=True, progress=progress)
    finally:
        model.train(was_training)
    metrics = recall_at_k(image_features, text_features, captions.caption_image, ks)
    return {**metrics, "num_images": len(captions.image_paths), "num_captions": len(captions.captions)}
