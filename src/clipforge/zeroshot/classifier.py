"""Zero-shot classifier: class-name prompts embedded by the text tower become the weights of a linear head.

`build_classifier` ensembles prompts the paper's way (normalise each prompt embedding, average over templates,
renormalise); asked to (`cache_dir=True` or a folder), it caches the result on disk keyed by the text tower's
weights, the class names, the templates and the tokenizer. `classify` turns images into class probabilities with
that head and the model's learned temperature. This is the one implementation of the zero-shot head: the apps,
the service, evaluation and training metrics all call it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from clipforge.encode import encode_tokens
from clipforge.fileio import atomic_write

CACHE_ENV = "CLIPFORGE_CACHE_DIR"


def default_cache_dir(kind: str = "zeroshot") -> Path:
    """`$CLIPFORGE_CACHE_DIR/<kind>`, else `~/.cache/clipforge/<kind>`."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "clipforge"
    return Path(root).expanduser() / kind


def cache_folder(cache_dir: str | os.PathLike | bool | None, kind: str) -> Path | None:
    """The one reading of every `cache_dir` argument: False or None -> no cache, True -> the default
    folder for `kind`, a path (`~` expanded) -> that folder."""
    if cache_dir is None or cache_dir is False:
        return None
    if cache_dir is True:
        return default_cache_dir(kind)
    return Path(cache_dir).expanduser()


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 of every tensor in `module.state_dict()` (name, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def text_weights_fingerprint(model: nn.Module) -> str:
    """Fingerprint of the weights a zero-shot classifier depends on: the text tower (whole model if none)."""
    return weights_fingerprint(getattr(model, "text", model))


def format_prompt(template: str, classname: str) -> str:
    if "{}" not in template:
        raise ValueError(f"template {template!r} has no '{{}}' placeholder for the class name")
    return template.replace("{}", classname)


def classifier_cache_key(
    weights_hash: str, classnames: Sequence[str], templates: Sequence[str], tokenizer_id: str
) -> str:
    payload = json.dumps([weights_hash, list(classnames), list(templates), tokenizer_id])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def model_tokenizer(model: nn.Module) -> Callable[[list[str]], Tensor]:
    """The model's own tokenizer (`clipforge.tokenizer.tokenizer_for`: the one CLIP BPE wrapper
    `default_tokenizer`, or an HF text tower's tokenizer.json) at its context length, truncating long prompts."""
    if hasattr(model, "config"):
        from clipforge.tokenizer import tokenizer_for

        return tokenizer_for(model)
    from clipforge.tokenizer import default_tokenizer

    return default_tokenizer(getattr(model, "context_length", 77))


@torch.no_grad()
def build_classifier(
    model: nn.Module,
    classnames: list[str],
    templates: list[str],
    *,
    tokenizer: Callable[[list[str]], Tensor] | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | bool | None = None,
    progress: bool = True,
) -> Tensor:
    """Zero-shot weights (E, C): per class, the renormalised mean of its unit prompt embeddings.

    cache_dir: False or None (default) computes without touching the disk; True caches under
    `default_cache_dir()`, a folder caches there. The key hashes the text tower's weights, the class names,
    the templates and the tokenizer, so a stale entry is never reused. The result lives on `device`
    (default: the model's device), float32."""
    if not classnames:
        raise ValueError("classnames is empty")
    if not templates:
        raise ValueError("templates is empty")
    device = torch.device(device) if device is not None else model_device(model)
    tokenizer_id = "clipforge" if tokenizer is None else getattr(tokenizer, "__qualname__", repr(tokenizer))
    cache_path = None
    folder = cache_folder(cache_dir, "zeroshot")
    if folder is not None:
        key = classifier_cache_key(text_weights_fingerprint(model), classnames, templates, tokenizer_id)
        cache_path = folder / f"{key}.pt"
        if cache_path.is_file():
            return torch.load(cache_path, map_location=device, weights_only=True)

    tokenizer = tokenizer or model_tokenizer(model)
    texts = [format_prompt(t, c) for c in classnames for t in templates]  # class-major: (C*T,)
    tokens = tokenizer(texts)  # (C*T, L)
    was_training = model.training
    model.eval()
    try:
        feats = encode_tokens(model, tokens, batch_size, normalize=True, progress=progress).to(
            device
        )  # (C*T, E)
    finally:
        model.train(was_training)
    feats = feats.view(len(classnames), len(templates), -1)  # (C, T, E)
    weights = F.normalize(feats.mean(dim=1), dim=-1).T.contiguous()  # (E, C)

    if cache_path is not None:
        cpu_weights = weights.cpu()
        atomic_write(cache_path, lambda f: torch.save(cpu_weights, f))
    return weights


def _image_batches(images: Tensor | Iterable, batch_size: int) -> Iterable[Tensor]:
    """Yield image tensors from a (N, 3, H, W) tensor or an iterable of batches / (images, labels) pairs."""
    if isinstance(images, Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
        return
    for batch in images:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def encode_images(
    model: nn.Module,
    images: Tensor | Iterable,
    batch_size: int = 256,
    device=None,
    progress: bool = False,
) -> Tensor:
    """Unit image embeddings (N, E) float32, on `device` (default: the model's)."""
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    try:
        chunks = [
            model.encode_image(batch.to(device), normalize=True).float()
            for batch in tqdm(_image_batches(images, batch_size), desc="images", disable=not progress)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def zeroshot_logits(
    image_features: Tensor,
    classifier: Tensor,
    logit_scale: Tensor | float,
    class_groups: list[list[int]] | None = None,
) -> Tensor:
    """(N, E) unit features @ (E, C) weights times the temperature multiplier -> (N, C) logits.

    With `class_groups` (one list of head classes per dataset class, e.g. ObjectNet's ImageNet classes),
    each dataset class scores as its best head class: (N, G)."""
    logits = float(logit_scale) * image_features.float() @ classifier.to(image_features.device).float()
    if class_groups is None:
        return logits
    return torch.stack([logits[:, group].max(dim=1).values for group in class_groups], dim=1)


@torch.no_grad()
def classify(
    model: nn.Module,
    classifier: Tensor,
    images: Tensor | Iterable,
    batch_size: int = 256,
    device=None,
    progress: bool = False,
) -> Tensor:
    """Class probabilities (N, C): softmax(exp(logit_scale) * unit image features @ classifier)."""
    features = encode_images(model, images, batch_size, device, progress)  # (N, E)
    return zeroshot_logits(features, classifier, model.logit_scale.exp()).softmax(dim=-1)
