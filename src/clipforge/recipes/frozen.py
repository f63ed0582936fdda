"""Locked towers run once: cached features, then many cheap epochs of what is trained (LiT on 2 CPU cores).

A locked tower's output never changes during training, so re-running it every epoch wastes nearly all of a
CPU budget. `image_feature_cache` runs the locked image trunk once over `views` augmented copies of each
training image; `text_feature_cache` runs a locked text encoder once over every caption. `CachedPairs` then
serves batches of cached features with one of their captions drawn per (seed, epoch, image), and
`CachedTowersObjective` is CLIP's loss with the cached parts replaced by their projections. Exact: a cached
feature equals the locked tower's output on the same augmented image (both run in eval mode).
"""

from __future__ import annotations

import importlib.util
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from clipforge.data import ImageCaptions
from clipforge.data.augment import AugmentConfig, augment_batch, keyed_uniform
from clipforge.data.sampler import EpochSampler, SamplerPosition
from clipforge.train.objectives import ContrastiveObjective

STREAM_VIEW = 12  # keyed_uniform stream of the cached-view draw (clipforge.data.augment uses 1..7)


def view_config(model, image_size: int | None = None, scale=(0.6, 1.0)) -> AugmentConfig:
    """Random resized crop + flip at the size fed to the image tower, normalised as the model's preprocess."""
    pre = model.config.preprocess
    size = image_size or pre.image_size
    return AugmentConfig(kind="resized_crop_flip", image_size=size, scale=scale, mean=pre.mean, std=pre.std)


class OnnxTrunk:
    """A locked image trunk run by onnxruntime: (B, 3, S, S) float32 -> (B, D) pooled features.

    Same values as PyTorch (checked on export: max difference <= 1e-3 of the features' scale, else ValueError),
    ~2.5x faster for EfficientNet-Lite0 on 2 CPU cores (depthwise convolutions). Exported once per trunk into
    a temporary file; the number of threads follows torch.get_num_threads()."""

    def __init__(self, trunk: nn.Module, image_size: int):
        import tempfile

        from clipforge.apps.runtimes import onnxruntime_runner

        trunk = trunk.eval()
        example = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
            path = f"{folder}/trunk.onnx"
            torch.onnx.export(trunk, (example,), path, input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, dynamo=False)  # fmt: skip
            self.run = onnxruntime_runner(path, torch.get_num_threads())  # the one way clipforge opens ORT
        with torch.no_grad():
            expected = trunk(example)
        got = self(example)
        error = float((got - expected).abs().max())
        if error > 1e-3 * float(expected.abs().max()):
            raise ValueError(f"onnxruntime trunk differs from PyTorch by {error:.3g}: use engine='torch'")

    def __call__(self, images: Tensor) -> Tensor:
        return torch.from_numpy(self.run(images.contiguous().numpy()))


def trunk_runner(model, image_size: int, engine: str = "auto") -> Callable[[Tensor], Tensor]:
    """The locked image trunk as a function of a normalised batch. `engine`: "onnxruntime" (OnnxTrunk),
    "torch" (eager, channels-last), or "auto" (onnxruntime when installed and the tower is a timm trunk)."""
    if engine not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"engine={engine!r}; valid: auto, onnxruntime, torch")
    trunk = timm_trunk(model)
    if engine == "auto":
        engine = "onnxruntime" if trunk is not None and importlib.util.find_spec("onnxruntime") else "torch"
    if engine == "onnxruntime":
        if trunk is None:
            raise ValueError("engine='onnxruntime' runs a timm trunk (vision.kind='timm')")
        return _locked_onnx_trunk(trunk, image_size)
    return lambda batch: model.visual.features(batch.contiguous(memory_format=torch.channels_last))


def timm_trunk(model) -> nn.Module | None:
    """The image tower's timm trunk module, or None (clipforge's own towers: ModifiedResNet's `trunk` is a method)."""
    trunk = getattr(model.visual, "trunk", None)
    return trunk if isinstance(trunk, nn.Module) else None


_EXPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # locked trunk -> {image size: OnnxTrunk}


def _locked_onnx_trunk(trunk: nn.Module, image_size: int) -> OnnxTrunk:
    """An OnnxTrunk of `trunk`, exported once per (trunk, size) while every trunk weight is frozen (a trunk
    that trains is exported afresh on each call: its weights may have changed)."""
    if any(p.requires_grad for p in trunk.parameters()):
        return OnnxTrunk(trunk, image_size)
    per_size = _EXPORTED.setdefault(trunk, {})
    if image_size not in per_size:
        per_size[image_size] = OnnxTrunk(trunk, image_size)
    return per_size[image_size]


def onnx_trunk_available(model) -> bool:
    """Whether `trunk_runner(model, size, "auto")` would run onnxruntime on a locked timm trunk."""
    trunk = timm_trunk(model)
    return (
        trunk is not None
        and not any(p.requires_grad for p in trunk.parameters())
        and importlib.util.find_spec("onnxruntime") is not None
    )


@torch.no_grad()
def image_feature_cache(
    model,
    images: Tensor,
    views: int | Sequence[int],
    augment: AugmentConfig,
    seed: int = 0,
    batch_size: int = 100,
    progress=True,
    engine: str = "auto",
) -> Tensor:
    """(N, V, D) float16 trunk features of V views per image: view 0 is the plain resized image, views >= 1
    random resized crops + flips keyed by (seed, view, image). `views`: a count (views 0 .. V-1) or the view
    numbers to compute. `engine`: see `trunk_runner`."""
    from clipforge.data.augment import eval_batch

    model.visual.eval()
    run = trunk_runner(model, augment.image_size, engine)
    numbers = list(range(views)) if isinstance(views, int) else list(views)
    out = torch.empty(len(images), len(numbers), model.visual.feature_dim, dtype=torch.float16)
    bar = tqdm(
        total=len(images) * len(numbers), desc="cache image features", disable=not progress, unit="img"
    )
    for slot, view in enumerate(numbers):
        for start in range(0, len(images), batch_size):
            index = torch.arange(start, min(start + batch_size, len(images)))
            chunk = gray_to_rgb(torch.as_tensor(images[index]))
            if view == 0:
                batch = eval_batch(chunk, augment.image_size, augment.mean, augment.std)
            else:
                batch = augment_batch(chunk, index, view, seed, augment)
            out[index, slot] = run(batch).half()
            bar.update(len(index))
    bar.close()
    return out


def gray_to_rgb(images: Tensor) -> Tensor:
    """(B, H, W, 1|3) uint8 -> (B, H, W, 3): grey images (mnist) repeated over the channels."""
    return images.expand(-1, -1, -1, 3) if images.shape[-1] == 1 else images


@torch.no_grad()
def text_feature_cache(model, tokens: Tensor, batch_size: int = 256, progress=True) -> Tensor:
    """(M, W) float16 pooled features of a locked text encoder (before its projection)."""
    model.text.eval()
    pad = getattr(model.text, "pad_token_id", 0)
    order = (tokens != pad).sum(1).argsort()  # length-sorted batches: less padding (masked, so exact)
    out: Tensor | None = None
    for start in tqdm(range(0, len(tokens), batch_size), desc="cache text features", disable=not progress):
        rows = order[start : start + batch_size]
        features = model.text.features(tokens[rows]).half()  # (b, W)
        if out is None:
            out = torch.empty(len(tokens), features.shape[1], dtype=torch.float16)
        out[rows] = features
    return out if out is not None else torch.empty(0, 0, dtype=torch.float16)


class CachedPairs(SamplerPosition):
    """The one loader protocol (clipforge.data.protocol) over a locked image tower's cached features.

    Batches {"image_features" (B, D), "text" (B, L), "index" (B,)} (+ "text_features" (B, W) when a locked text
    tower's features are cached): image i with the caption `captions` (clipforge.data.ImageCaptions, the same
    sampler of human captions as the trainer's `data.kind=table`) picks for it in the epoch, and one of its
    cached views drawn per (seed, epoch, i). Order and position come from the `EpochSampler`, so a resumed run
    gets exactly the batches an uninterrupted one would have."""

    def __init__(
        self,
        image_features: Tensor,
        captions: ImageCaptions,
        sampler: EpochSampler,
        text_features: Tensor | None = None,
    ):
        if len(image_features) != len(captions.captions) or sampler.num_samples != len(image_features):
            raise ValueError(
                f"{len(image_features)} cached images, captions for {len(captions.captions)}, sampler over "
                f"{sampler.num_samples}: all three must match"
            )
        if text_features is not None and len(text_features) != len(captions.texts):
            raise ValueError(f"{len(text_features)} cached text features for {len(captions.texts)} captions")
        self.image_features, self.captions, self.sampler = image_features, captions, sampler
        self.text_features = text_features

    @property
    def caption_texts(self) -> list[str]:
        return self.captions.texts

    def make_batch(self, index: Tensor, epoch: int) -> dict[str, Tensor]:
        """The batch for these sample indices in this epoch (a pure function of its arguments)."""
        rows = self.captions.rows(index, epoch)
        views = self.image_features.shape[1]
        view = (keyed_uniform(self.sampler.seed, epoch, index, STREAM_VIEW) * views).astype(np.int64)
        batch = {
            "image_features": self.image_features[index, torch.from_numpy(view)],
            "text": self.captions.token_table[rows],
            "index": index,
        }
        if self.text_features is not None:
            batch["text_features"] = self.text_features[rows]
        return batch

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        """The current epoch from the current position; the position advances as each batch is handed out."""
        epoch = self.sampler.epoch
        for index in self.sampler.batches():
            self.sampler.offset += len(index)
            yield self.make_batch(index, epoch)


class CachedTowersObjective(ContrastiveObjective):
    """CLIP's loss; a batch's cached `image_features` / `text_features` go through the towers' projections only."""

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if "image_features" in batch:
            image = self.model.visual.project(batch["image_features"].float())
        else:
            image = self.model.encode_image(batch["images"])
        if "text_features" in batch:
            text = self.model.text.project(batch["text_features"].float())
        else:
            text = self.model.encode_text(batch["text"])
        return F.normalize(image, dim=-1), F.normalize(text, dim=-1)
