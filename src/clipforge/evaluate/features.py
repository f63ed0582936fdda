"""Image features extracted once and cached on disk (keyed by the image tower's weights and the data)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clipforge.fileio import atomic_write
from clipforge.zeroshot.classifier import default_cache_dir, model_device, weights_fingerprint

FeatureKind = Literal["auto", "pre-projection", "embedding"]


def resolve_kind(model: nn.Module, kind: FeatureKind) -> str:
    """auto: the paper's choice — pre-projection class token for ViT, the (attention-pooled) embedding for ResNet."""
    if kind != "auto":
        if kind not in ("pre-projection", "embedding"):
            raise ValueError(f"feature kind must be auto, pre-projection or embedding, got {kind!r}")
        return kind
    vision_kind = getattr(getattr(getattr(model, "config", None), "vision", None), "kind", "vit")
    return "pre-projection" if vision_kind == "vit" else "embedding"


def dataset_fingerprint(dataset) -> str:
    """Hash of the sample list (paths, or pixel bytes for in-memory images) and labels.

    A dataset without `.samples` is keyed by its type and length only: pass cache_dir=False for those."""
    digest = hashlib.sha256()
    samples = getattr(dataset, "samples", None)
    if samples is None:
        digest.update(f"{type(dataset).__name__}|{len(dataset)}".encode())
        return digest.hexdigest()[:16]
    digest.update(str(len(samples)).encode())
    for source, label in samples:
        digest.update(str(source).encode() if isinstance(source, (str, os.PathLike)) else source.tobytes())
        digest.update(f"|{label};".encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    dataset,
    kind: FeatureKind = "embedding",
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device=None,
    cache_dir: str | os.PathLike | bool | None = False,
    normalize: bool | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """(features (N, D) float32 on CPU, labels (N,)). `embedding` features are unit-normalised by default.

    cache_dir: a folder, None for the default cache, False (default) for no caching."""
    kind = resolve_kind(model, kind)
    normalize = (kind == "embedding") if normalize is None else normalize
    cache_path = None
    if cache_dir is not False:
        folder = (default_cache_dir().parent / "features") if cache_dir in (None, True) else Path(cache_dir)
        key_src = json.dumps(
            [weights_fingerprint(model.visual), dataset_fingerprint(dataset), kind, normalize]
        )
        cache_path = folder / f"{hashlib.sha256(key_src.encode()).hexdigest()[:32]}.pt"
        if cache_path.is_file():
            cached = torch.load(cache_path, weights_only=True)
            return cached["features"], cached["labels"]

    device = torch.device(device) if device is not None else model_device(model)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    was_training = model.training
    model.eval()
    chunks, labels = [], []
    try:
        for images, batch_labels in tqdm(
            loader, desc=f"features ({kind})", disable=not progress, leave=False
        ):
            images = images.to(device)
            if kind == "pre-projection":
                feats = model.visual.features(images.to(model.dtype))  # (B, W)
            else:
                feats = model.encode_image(images)  # (B, E)
            feats = feats.float()
            chunks.append((F.normalize(feats, dim=-1) if normalize else feats).cpu())
            labels.append(torch.as_tensor(batch_labels))
    finally:
        model.train(was_training)
    features, labels_t = torch.cat(chunks), torch.cat(labels).long()
    if cache_path is not None:
        payload = {"features": features, "labels": labels_t}
        atomic_write(cache_path, lambda f: torch.save(payload, f))
    return features, labels_t
