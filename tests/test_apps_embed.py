"""`clipforge embed` / `index` / `search`: shards, resume, ranks, texts, WebDataset, and search quality."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

from test_apps_helpers import cached_tiny_clip, cifar_rows, load_images  # noqa: E402

import clipforge  # noqa: E402
from clipforge.apps.embed import embed_source, load_embeddings  # noqa: E402
from clipforge.transforms import Preprocess  # noqa: E402


@pytest.fixture(scope="module")
def model(shared_data, tmp_path_factory):
    return cached_tiny_clip(shared_data, tmp_path_factory.getbasetemp().parent)


@pytest.fixture(scope="module")
def table(shared_data, tmp_path_factory):
    """50 CIFAR-10 test images (5 per class) as a CSV with absolute paths."""
    rows = cifar_rows(shared_data, "test")
    picked = [r for c in range(10) for r in [r for r in rows if int(r["label"]) == c][:5]]
    path = tmp_path_factory.mktemp("embed") / "images.csv"
    lines = "".join(f"{shared_data / 'cifar10' / r['path']},{r['class_name']}\n" for r in picked)
    path.write_text("path,class_name\n" + lines)
    return path, picked


def test_image_shards_equal_the_model_and_resume(model, shared_data, table, tmp_path):
    path, picked = table
    pre = Preprocess(model.config.preprocess)
    out = tmp_path / "emb"
    report = embed_source(model, pre, path, out, shard_size=16, progress=False, rank=0, world_size=1)
    assert report["written"] == [0, 1, 2, 3] and report["rows"] == 50 and not report["failures"]
    assert np.load(out / "emb-00000.npy").dtype == np.float16
    vectors, meta = load_embeddings(out)
    with torch.inference_mode():
        expected = model.encode_image(load_images(shared_data, picked, pre), normalize=True).numpy()
    np.testing.assert_allclose(vectors, expected, atol=2e-3)  # float16 storage
    assert [m["class_name"] for m in meta] == [r["class_name"] for r in picked]
    (out / "emb-00002.npy").unlink()  # as if the job died while writing shard 2
    again = embed_source(model, pre, path, out, shard_size=16, progress=False, rank=0, world_size=1)
    assert again["written"] == [2] and again["skipped"] == [0, 1, 3]
    np.testing.assert_array_equal(load_embeddings(out)[0], vectors)
    info = json.loads((out / "embeddings.json").read_text())
    assert info["num_shards"] == 4 and info["kind"] == "image" and info["dim"] == 64


def test_ranks_take_disjoint_shards(model, table, tmp_path, monkeypatch):
    path, _ = table
    pre = Preprocess(model.config.preprocess)
    written = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        report = embed_source(
            model, pre, path, tmp_path, shard_size=8, dtype="float32", metadata_format="jsonl", progress=False
        )
        assert report["written"] == list(range(rank, 7, 3))
        written += report["written"]
    assert sorted(written) == list(range(7)) and len(load_embeddings(tmp_path)[1]) == 50


def test_texts_from_jsonl_and_images_from_webdataset(model, shared_data, tmp_path):
    texts = ["a photo of a cat.", "a red truck", "two dogs", "a ship at sea"]
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
    )
    embed_source(model, None, tmp_path / "t.jsonl", tmp_path / "te", kind="text", progress=False)
    vectors, meta = load_embeddings(tmp_path / "te")
    with torch.inference_mode():
        expected = model.encode_text(clipforge.tokenize(texts), normalize=True).numpy()
    np.testing.assert_allclose(vectors, expected, atol=2e-3)
    assert [m["id"] for m in meta] == [0, 1, 2, 3]

    rows = cifar_rows(shared_data, "test")[:6]
    tar_path = tmp_path / "wds" / "shard-0000.tar.gz"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tar:
        for i, row in enumerate(rows):
            for ext, data in (
                ("jpg", (shared_data / "cifar10" / row["path"]).read_bytes()),
                ("cls", row["label"].encode()),
            ):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    pre = Preprocess(model.config.preprocess)
    embed_source(model, pre, tar_path.parent, tmp_path / "we", progress=False)
    vectors, meta = load_embeddings(tmp_path / "we")
    with torch.inference_mode():
        expected = model.encode_image(load_images(shared_data, rows, pre), normalize=True).numpy()
    np.testing.assert_allclose(vectors, expected, atol=2e-3)
    assert [m["cls"] for m in meta] == [r["label"] for r in rows]
    from clipforge.apps.index import build_index_dir

    report = build_index_dir(tmp_path / "we", tmp_path / "wi", progress=False)
    assert report["thumbnails"] == 6 and (tmp_path / "wi" / "thumbs" / "00000005.jpg").is_file()


def test_index_and_search_cli_find_the_right_images(model, shared_data, tmp_path):
    from clipforge.checkpoints import save
    from clipforge.commands import embed, index, search

    checkpoint = str(save(model, tmp_path / "tiny.pt"))
    folder = shared_data / "cifar10" / "images" / "test"
    embed.main(
        [
            str(folder),
            "--out",
            str(tmp_path / "emb"),
            "--checkpoint",
            checkpoint,
            "--quiet",
            "--shard-size",
            "400",
        ]
    )
    report = index.main([str(tmp_path / "emb"), "--out", str(tmp_path / "idx"), "--quiet"])
    assert report["kind"] == "flat" and report["count"] == 1000 and report["thumbnails"] == 1000
    approx = index.main(
        [
            str(tmp_path / "emb"),
            "--out",
            str(tmp_path / "ivf"),
            "--kind",
            "hnsw",
            "--quiet",
            "--no-thumbnails",
        ]
    )
    assert approx["recall_at_10"] >= 0.9

    query_image = sorted((folder / "horse").iterdir())[3]
    hits = search.main(
        [str(tmp_path / "idx"), "--image", str(query_image), "--checkpoint", checkpoint, "-k", "5", "--json"]
    )["hits"]
    assert hits[0]["metadata"]["path"] == f"horse/{query_image.name}"  # an indexed image finds itself
    assert hits[0]["score"] == pytest.approx(1.0, abs=2e-3)
    precisions = []
    for name in (shared_data / "cifar10" / "classes.txt").read_text().split():
        hits = search.main(
            [
                str(tmp_path / "idx"),
                "--text",
                f"a photo of a {name}.",
                "--checkpoint",
                checkpoint,
                "-k",
                "20",
                "--json",
            ]
        )["hits"]
        precisions.append(np.mean([h["metadata"]["label"] == name for h in hits]))
    print(f"text->image precision@20: {np.mean(precisions):.3f}")
    assert np.mean(precisions) >= 0.2  # chance 0.1
    both = search.main(
        [
            str(tmp_path / "idx"),
            "--image",
            str(query_image),
            "--text",
            "a photo of a horse.",
            "--checkpoint",
            checkpoint,
            "-k",
            "3",
            "--json",
        ]
    )["hits"]
    assert len(both) == 3
