"""WebDataset shards: the tar reader, skip counting, the decode cache keyed by shard hashes (streaming: test_data_stream)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from clipforge.data import cached_shards, expand_shards, iter_shard
from clipforge.data.tarshards import split_key

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _tokenizer(texts):  # a stand-in keeps these tests independent of BPE speed
    return torch.tensor([[len(t), sum(map(ord, t)) % 1000] for t in texts])


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    folder: Path, rows, num_shards: int, per_shard: int, gz: bool = True, damage: dict | None = None
):
    """Shards of real CIFAR JPEGs with .cls/.txt/.json members; `damage` maps global sample number -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    damage = damage or {}
    for s in range(num_shards):
        name = folder / f"train-{s:04d}.tar{'.gz' if gz else ''}"
        with tarfile.open(name, "w:gz" if gz else "w") as tar:
            for j in range(per_shard):
                n = s * per_shard + j
                path, label = rows[n * 7 % len(rows)]
                key = f"{n:06d}"
                _add(tar, f"{key}.jpg", damage.get(n, Path(path).read_bytes()))
                _add(tar, f"{key}.cls", str(label).encode())
                _add(tar, f"{key}.txt", f"a photo of a {CLASSES[label]}".encode())
                _add(tar, f"{key}.json", json.dumps({"label": label, "class_name": CLASSES[label]}).encode())
    return folder


def cifar_rows(shared_data) -> list[tuple]:
    """(JPEG path, label) of the 1,000 CIFAR-10 test images."""
    lines = (shared_data / "cifar10" / "test.csv").read_text().splitlines()[1:]
    return [(shared_data / "cifar10" / p, int(label)) for p, label, _ in (line.split(",") for line in lines)]


@pytest.fixture(scope="module")
def rows(shared_data):
    return cifar_rows(shared_data)


def _indices(batches) -> list[int]:
    return torch.cat([b["index"] for b in batches]).tolist() if batches else []


def test_corrupt_samples_in_shards_are_skipped_and_counted_by_the_cache(tmp_path, rows):
    good = (rows[0][0]).read_bytes()
    damage = {3: good[: len(good) // 3], 11: b"garbage", 12: b""}
    folder = write_shards(tmp_path / "s", rows, 2, per_shard=8, gz=False, damage=damage)
    decoded = cached_shards(folder, tmp_path / "cache", num_workers=1, progress=False)
    assert len(decoded) == 13 and decoded.skips.as_dict() == {"corrupt_image": 3}


def test_cache_is_keyed_by_shard_content(tmp_path, rows):
    folder = write_shards(tmp_path / "s", rows, 2, per_shard=6)
    first = cached_shards(folder, tmp_path / "cache", num_workers=2, progress=False)
    again = cached_shards(f"{folder}/train-{{0000..0001}}.tar.gz", tmp_path / "cache", progress=False)
    assert first.path == again.path and np.array_equal(first.images, again.images)
    assert first.class_names[rows[0][1]] == CLASSES[rows[0][1]]
    assert first.labels.tolist() == [rows[n * 7 % len(rows)][1] for n in range(12)]
    write_shards(tmp_path / "s", rows[1:], 1, per_shard=6)  # rewrite shard 0 with other images
    changed = cached_shards(folder, tmp_path / "cache", progress=False)
    assert changed.path != first.path and not np.array_equal(changed.images, first.images)


def test_iter_shard_offsets_and_keys(tmp_path, rows):
    folder = write_shards(tmp_path / "s", rows, 1, per_shard=5)
    shard = expand_shards(folder)[0]
    whole = list(iter_shard(shard))
    assert [o for o, _ in whole] == [0, 1, 2, 3, 4] and set(whole[0][1]) == {
        "__key__",
        "jpg",
        "cls",
        "txt",
        "json",
    }
    tail = list(iter_shard(shard, start=3))
    assert [o for o, _ in tail] == [3, 4] and tail[0][1]["jpg"] == whole[3][1]["jpg"]
    assert split_key("a/b/000001.seg.jpg") == ("a/b/000001", "seg.jpg")


@pytest.mark.slow
def test_full_cifar10_wds_decodes_to_50000(shared_data, tmp_path):
    decoded = cached_shards(shared_data / "cifar10-wds", tmp_path, num_workers=2, progress=False)
    assert decoded.images.shape == (50000, 32, 32, 3) and decoded.skips.total == 0
    assert np.bincount(decoded.labels).tolist() == [5000] * 10
    assert [decoded.class_names[i] for i in range(10)] == CLASSES
    assert cached_shards(shared_data / "cifar10-wds", tmp_path, progress=False).path == decoded.path


def test_fast_tar_reader_matches_tarfile(tmp_path, rows):
    """USTAR prefix, pax and GNU long names, directories: same members and bytes as Python's tarfile."""
    long_name = "d/" + "x" * 150 + "/000001.jpg"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        path = tmp_path / f"f{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            info = tarfile.TarInfo("d")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            _add(tar, "d/000000.jpg", rows[0][0].read_bytes())
            _add(tar, long_name if fmt != tarfile.USTAR_FORMAT else "d/" + "y" * 120 + "/1.txt", b"caption")
        from clipforge.data.tarshards import iter_members

        with tarfile.open(path) as tar:
            expected = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
        assert list(iter_members(path)) == expected


def test_open_labelled_dataset_on_shards_and_worker_seeding(tmp_path, rows):
    import pickle

    from clipforge.data import detect_layout, open_labelled_dataset
    from clipforge.tokenizer import default_tokenizer

    folder = write_shards(tmp_path / "s", rows[::50], 2, per_shard=10)  # 2 images of each class
    assert detect_layout(folder, "train")[0] == "shards"
    data = open_labelled_dataset(folder, "train", cache_dir=tmp_path / "c", num_workers=1, progress=False)
    assert len(data) == 20 and data.classes == CLASSES  # names from the .json members
    assert data.labels.bincount().tolist() == [2] * 10
    assert pickle.loads(pickle.dumps(default_tokenizer(8))).context_length == 8

    class Draws(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.from_numpy(np.random.rand(3))

    from clipforge.data.webdataset import seed_worker

    def run():
        loader = torch.utils.data.DataLoader(
            Draws(), batch_size=None, num_workers=2, worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(7),
        )  # fmt: skip
        return [t.tolist() for t in loader]

    first = run()
    assert first == run() and first[0] != first[1]  # seeded per worker, reproducible


def test_caption_shards_in_memory_loader(tmp_path, rows):
    from clipforge import tokenize
    from clipforge.data import ArrayLoader, AugmentConfig, EpochSampler, open_caption_shards

    folder = write_shards(tmp_path / "s", rows[::50], 2, per_shard=6)
    data, captions = open_caption_shards(folder, context_length=12, cache_dir=tmp_path / "c", progress=False)
    assert len(data) == 12 and len(captions.captions) == 12
    loader = ArrayLoader(data, captions, EpochSampler(12, seed=0, batch_size=5), AugmentConfig(image_size=32))
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [5, 5, 2]
    batch = batches[0]
    expected = tokenize(
        [captions.captions[i][0] for i in batch["index"].tolist()], context_length=12, truncate=True
    )
    assert torch.equal(batch["text"], expected)
    assert captions.captions[0] == [f"a photo of a {CLASSES[int(data.labels[0])]}"]
