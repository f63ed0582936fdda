"""Retrieval Recall@K equals a brute-force reference; caption files in CSV and JSONL."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from clipforge.evaluate.retrieval import load_captions, recall_at_k


def brute_force(image_features, text_features, caption_image, k):
    scores = image_features @ text_features.T  # (N, M)
    t2i = [
        int(caption_image[j]) in scores[:, j].argsort(descending=True)[:k].tolist()
        for j in range(scores.shape[1])
    ]
    i2t = []
    for i in range(scores.shape[0]):
        top = scores[i].argsort(descending=True)[:k]
        i2t.append(any(int(caption_image[j]) == i for j in top))
    return sum(t2i) / len(t2i), sum(i2t) / len(i2t)


def test_recall_equals_brute_force():
    torch.manual_seed(0)
    num_images, per_image, dim = 40, 5, 16
    images = F.normalize(torch.randn(num_images, dim), dim=-1)
    caption_image = torch.arange(num_images).repeat_interleave(per_image)[
        torch.randperm(num_images * per_image)
    ]
    texts = F.normalize(images[caption_image] + 1.2 * torch.randn(len(caption_image), dim), dim=-1)
    got = recall_at_k(images, texts, caption_image, ks=(1, 5, 10), chunk=7)
    for k in (1, 5, 10):
        t2i, i2t = brute_force(images, texts, caption_image, k)
        assert abs(got[f"image_retrieval_recall@{k}"] - t2i) < 1e-6
        assert abs(got[f"text_retrieval_recall@{k}"] - i2t) < 1e-6
    assert (
        0.05 < got["image_retrieval_recall@1"] < got["image_retrieval_recall@10"] < 1.0
    )  # neither trivial nor saturated


def test_ties_count_against_the_positive():
    """A collapsed model (every score equal) gets no credit; one tie with a negative pushes the positive down."""
    caption_image = torch.arange(10).repeat_interleave(5)  # 10 images x 5 captions
    collapsed = recall_at_k(torch.ones(10, 4) / 2, torch.ones(50, 4) / 2, caption_image, ks=(1, 5, 10))
    assert collapsed["image_retrieval_recall@1"] == 0.0 and collapsed["text_retrieval_recall@1"] == 0.0
    assert collapsed["image_retrieval_recall@5"] == 0.0  # 9 negatives tie with each positive
    images = torch.eye(3)  # image 2 duplicates image 0: caption 0 ties between its image and a negative
    images[2] = images[0]  # caption 2 scores 0 against all three images: rank 2
    got = recall_at_k(images, torch.eye(3), torch.arange(3), ks=(1, 2))
    assert (
        abs(got["image_retrieval_recall@1"] - 1 / 3) < 1e-6
        and abs(got["image_retrieval_recall@2"] - 2 / 3) < 1e-6
    )


def test_load_captions_csv_and_jsonl(shared_data, tmp_path):
    coco = load_captions(shared_data / "coco_captions_mini" / "captions.csv", split="test")
    counts = torch.bincount(coco.caption_image)
    assert len(coco.captions) == len(coco.caption_image) and (counts >= 5).all()
    assert all(p.is_file() for p in coco.image_paths[:5])
    path = tmp_path / "caps.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [{"image": "a.jpg", "captions": ["x", "y"]}, {"path": "b.jpg", "caption": "z"}]
        )
    )
    jsonl = load_captions(path)
    assert [p.name for p in jsonl.image_paths] == ["a.jpg", "b.jpg"] and jsonl.caption_image.tolist() == [
        0,
        0,
        1,
    ]
