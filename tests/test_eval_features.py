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
