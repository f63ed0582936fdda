"""Features are extracted once: a second call with the same weights and data reads the disk cache."""

from __future__ import annotations

import torch

from clipforge.evaluate.datasets import cifar
from clipforge.evaluate.features import extract_features
from clipforge.models import CLIP, get_config
from clipforge.transforms import image_transform


def test_feature_cache_and_kinds(shared_data, tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = get_config("tiny-vit")
    model = CLIP(config).eval()
    data = cifar(shared_data / "cifar10", "test", image_transform(config.preprocess))
    data.samples = data.samples[::50]  # 20 images
    pre, labels = extract_features(model, data, "auto", cache_dir=tmp_path, progress=False)
    emb, _ = extract_features(model, data, "embedding", cache_dir=tmp_path, progress=False)
    assert pre.shape == (20, 64) and emb.shape == (20, 64) and labels.tolist() == data.labels
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(20))
    with torch.no_grad():
        torch.testing.assert_close(pre[:2], model.visual.features(torch.stack([data[0][0], data[1][0]])))

    def boom(*args, **kwargs):
        raise AssertionError("model called on a cache hit")

    monkeypatch.setattr(model, "encode_image", boom)
    monkeypatch.setattr(model.visual, "features", boom)
    again, _ = extract_features(model, data, "embedding", cache_dir=tmp_path, progress=False)
    assert torch.equal(again, emb) and len(list(tmp_path.glob("*.pt"))) == 2


def _folder(tmp_path, seed: int):
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            pixels = torch.randint(0, 256, (40, 48, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "data" / cls / f"{i}.png")
    return tmp_path / "data"


def test_feature_cache_key_is_exact(tmp_path):
    """A new transform or a rewritten file is a cache miss (never a stale hit); a transform without a
    stable identity is not cached, with a warning."""
    import dataclasses
    import os
    import warnings

    import pytest

    from clipforge.evaluate.datasets import image_folder

    torch.manual_seed(0)
    config = get_config("tiny-vit")
    model = CLIP(config).eval()
    root, cache = _folder(tmp_path, 0), tmp_path / "cache"
    data = image_folder(root, image_transform(config.preprocess))
    first, _ = extract_features(model, data, cache_dir=cache, progress=False)
    bilinear = dataclasses.replace(config.preprocess, interpolation="bilinear")
    other = extract_features(
        model, image_folder(root, image_transform(bilinear)), cache_dir=cache, progress=False
    )
    assert len(list(cache.glob("*.pt"))) == 2 and not torch.equal(first, other[0])

    path = root / "a" / "0.png"
    stat = path.stat()
    _folder(tmp_path, 1)  # same names and sizes, new pixels
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    fresh, _ = extract_features(model, image_folder(root, image_transform(config.preprocess)), cache_dir=cache,
                                progress=False)  # fmt: skip
    assert len(list(cache.glob("*.pt"))) == 3 and not torch.equal(fresh, first)

    lam = image_folder(root, lambda image: image_transform(config.preprocess)(image))
    with pytest.warns(UserWarning, match="not cached"):
        extract_features(model, lam, cache_dir=cache, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extract_features(model, lam, cache_dir=False, progress=False)
    assert len(list(cache.glob("*.pt"))) == 3
