"""Zero-shot classifier: prompt ensembling equals the hand computation, the disk cache, classify."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipforge.models import CLIP, get_config
from clipforge.zeroshot.classifier import build_classifier, classify, text_weights_fingerprint

CLASSNAMES = ["cat", "dog", "aeroplane with a very long descriptive name indeed", "ship"]
TEMPLATES = ["a photo of a {}.", "{}", "a blurry low resolution photo of the big {} in the corner."]


def _tokenizer():
    try:
        from clipforge.tokenizer import tokenize
    except ImportError:  # the tokenizer package lands separately; OpenAI's BPE is identical in open_clip
        from open_clip import tokenize
    return tokenize


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CLIP(get_config("tiny-vit")).eval()


def test_ensemble_equals_hand_computation(model, tmp_path):
    tokenize = _tokenizer()
    got = build_classifier(
        model, CLASSNAMES, TEMPLATES, tokenizer=tokenize, batch_size=2, cache_dir=False, progress=False
    )
    assert got.shape == (64, len(CLASSNAMES))
    with torch.no_grad():
        columns = []
        for name in CLASSNAMES:
            per_template = [
                F.normalize(model.encode_text(tokenize([t.format(name)])), dim=-1)[0] for t in TEMPLATES
            ]
            columns.append(F.normalize(torch.stack(per_template).mean(0), dim=0))
    torch.testing.assert_close(got, torch.stack(columns, dim=1), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.norm(dim=0), torch.ones(len(CLASSNAMES)))


def test_cache_hit_costs_no_encoding_and_is_keyed_by_weights(model, tmp_path, monkeypatch):
    tokenize = _tokenizer()
    kwargs = dict(tokenizer=tokenize, cache_dir=tmp_path, progress=False)
    first = build_classifier(model, CLASSNAMES, TEMPLATES, **kwargs)
    assert len(list(tmp_path.glob("*.pt"))) == 1

    def boom(*args, **kw):
        raise AssertionError("encode_text called on a cache hit")

    monkeypatch.setattr(model, "encode_text", boom)
    second = build_classifier(model, CLASSNAMES, TEMPLATES, **kwargs)
    assert torch.equal(first, second)
    monkeypatch.undo()

    before = text_weights_fingerprint(model)
    other = CLIP(get_config("tiny-vit")).eval()
    assert text_weights_fingerprint(other) != before
    build_classifier(other, CLASSNAMES, TEMPLATES, **kwargs)
    build_classifier(model, CLASSNAMES[:2], TEMPLATES, **kwargs)
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_classify_equals_softmax_of_scaled_cosines(model):
    torch.manual_seed(1)
    images = torch.randn(5, 3, 32, 32)
    classifier = F.normalize(torch.randn(64, 3), dim=0)
    probs = classify(model, classifier, images, batch_size=2)
    with torch.no_grad():
        feats = F.normalize(model.encode_image(images), dim=-1)
        expected = (model.logit_scale.exp() * feats @ classifier).softmax(-1)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)
    loader = [(images[:3], torch.zeros(3)), (images[3:], torch.zeros(2))]
    torch.testing.assert_close(classify(model, classifier, loader), expected, atol=1e-6, rtol=0)
