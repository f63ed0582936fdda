"""Image features of a labelled dataset, optionally cached on disk under an exact key (weights, transform,\nfiles)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clipforge.fileio import atomic_write
from clipforge.zeroshot.classifier import cache_folder, model_device, weights_fingerprint

FeatureKind = Literal["auto", "pre-projection", "embedding"]


def resolve_kind(model: nn.Module, kind: FeatureKind) -> str:
    """auto: the paper's choice — pre-projection class token for ViT, the (attention-pooled) embedding for ResNet."""
    if kind != "auto":
        if kind not in ("pre-projection", "embedding"):
            raise ValueError(f"feature kind must be auto, pre-projection or embedding, got {kind!r}")
        return kind
    vision_kind = getattr(getattr(getattr(model, "config", None), "vision", None), "kind", "vit")
    return "pre-projection" if vision_kind == "vit" else "embedding"


def transform_identity(transform) -> str | None:
    """A stable description of a transform for cache keys, or None when it has none.

    clipforge's Preprocess/TrainPreprocess are described by their config (their repr); an arbitrary
    callable (a lambda, a torchvision Compose) has no identity that survives a restart."""
    if transform is None:
        return "none"
    from clipforge.transforms import Preprocess, TrainPreprocess

    return repr(transform) if isinstance(transform, (Preprocess, TrainPreprocess)) else None


def dataset_fingerprint(dataset) -> str | None:
    """Hash of what the features of `dataset` depend on, or None when that cannot be known.

    Covers the transform's configuration, the labels, and each sample: an in-memory array by its bytes,
    a file by its resolved path, size and modification time (a rewritten file gets a new key)."""
    samples = getattr(dataset, "samples", None)
    transform = transform_identity(getattr(dataset, "transform", None))
    if samples is None or transform is None:
        return None
    digest = hashlib.sha256(f"{type(dataset).__name__}|{transform}|{len(samples)}".encode())
    for source, label in samples:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).resolve()
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        else:
            digest.update(f"{source.dtype}|{source.shape}".encode() + source.tobytes())
        digest.update(f"|{label};".encode())
    return digest.hexdigest()


def features_cache_path(model: nn.Module, dataset, kind: str, normalize: bool, device, folder: Path):
    """`folder/<key>.pt`, the key hashing the image tower's weights, the dataset fingerprint, the
    feature kind, normalisation and device type; None (with a warning) for a dataset without a stable
    fingerprint, which is then not cached."""
    fingerprint = dataset_fingerprint(dataset)
    if fingerprint is None:
        warnings.warn(
            f"features of {type(dataset).__name__} not cached: it needs .samples and a clipforge "
            "Preprocess transform for an exact cache key (pass cache_dir=False to silence this)",
            stacklevel=3,
        )
        return None
    key = json.dumps([weights_fingerprint(model.visual), fingerprint, kind, normalize, device.type])
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"


@torch.no_grad()
def extract_features(
    model: nn.Module,
    dataset,
    kind: FeatureKind = "embedding",
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device=None,
    cache_dir: str | os.PathLike | bool | None = None,
    normalize: bool | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """(features (N, D) float32 on CPU, labels (N,)). `embedding` features are unit-normalised by default.

    cache_dir: False or None (default) computes without touching the disk; True caches under the default
    folder (`$CLIPFORGE_CACHE_DIR/features`), a folder caches there (see `features_cache_path`)."""
    kind = resolve_kind(model, kind)
    normalize = (kind == "embedding") if normalize is None else normalize
    device = torch.device(device) if device is not None else model_device(model)
    folder = cache_folder(cache_dir, "features")
    cache_path = (
        None if folder is None else features_cache_path(model, dataset, kind, normalize, device, folder)
    )
    if cache_path is not None and cache_path.is_file():
        cached = torch.load(cache_path, weights_only=True)
        return cached["features"], cached["labels"]

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
