"""Sources on real CIFAR-10 / COCO files: tables, caption folders, CIFAR pickles, skip counting, clear errors."""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipforge.data import (
    DataSourceError,
    SkipCounter,
    decode_records,
    load_cifar_python,
    load_retrieval_set,
    open_labelled_dataset,
    read_caption_folder,
    read_table,
)
from clipforge.data.cifar import load_safe_pickle


@pytest.fixture(scope="module")
def cifar_test_rows(shared_data: Path) -> list[tuple[Path, int]]:
    lines = (shared_data / "cifar10" / "test.csv").read_text().splitlines()[1:]
    rows = [line.split(",") for line in lines]
    return [(shared_data / "cifar10" / path, int(label)) for path, label, _ in rows]


def _copy_with_damage(rows, folder: Path) -> list[tuple[str, int]]:
    """24 real images; #3 truncated, #5 garbage bytes, #7 deleted: 3 bad files."""
    folder.mkdir()
    kept = []
    for i, (path, label) in enumerate(rows[::40][:24]):
        target = folder / f"{i:03d}.jpg"
        shutil.copy(path, target)
        kept.append((target.name, label))
    data = (folder / "003.jpg").read_bytes()
    (folder / "003.jpg").write_bytes(data[: len(data) // 2])
    (folder / "005.jpg").write_bytes(b"this is not an image at all")
    (folder / "007.jpg").unlink()
    return kept


def test_csv_with_corrupt_missing_empty_and_non_utf8(tmp_path, cifar_test_rows):
    kept = _copy_with_damage(cifar_test_rows, tmp_path / "imgs")
    lines = ["path,caption,label"]
    for i, (name, label) in enumerate(kept):
        caption = "a photo" if i not in (9, 11) else ""
        lines.append(f"imgs/{name},{caption},{label}")
    table = tmp_path / "pairs.csv"
    raw = ("\n".join(lines) + "\n").encode()
    raw = raw.replace(b"imgs/013.jpg,a photo", b"imgs/013.jpg,a \xff\xfe photo")  # not UTF-8
    table.write_bytes(raw)
    skips = SkipCounter()
    records = read_table(table, caption_column="caption", label_column="label", skips=skips)
    assert (
        len(records) == 24 and records[0].image == tmp_path / "imgs" / "000.jpg"
    )  # resolved vs the CSV folder
    decoded = decode_records(records, want_captions=True, num_workers=1, progress=False)
    assert decoded.skips.as_dict() == {
        "corrupt_image": 2,
        "empty_caption": 2,
        "missing_file": 1,
        "non_utf8_caption": 1,
    }
    assert len(decoded) == 18 and decoded.images.shape == (18, 32, 32, 3)
    assert decoded.captions[0] == "a photo"
    expected_labels = [label for i, (_, label) in enumerate(kept) if i not in (3, 5, 7, 9, 11, 13)]
    assert decoded.labels.tolist() == expected_labels
    assert "skipped 6" in decoded.skips.summary()


def test_tsv_and_jsonl_with_custom_columns(tmp_path, cifar_test_rows):
    (path, _), (path2, _) = cifar_test_rows[0], cifar_test_rows[500]
    (tmp_path / "t.tsv").write_text(f"file\ttext\n{path}\tfirst\n{path2}\tsecond\n")
    records = read_table(tmp_path / "t.tsv", image_column="file", caption_column="text")
    assert [r.caption for r in records] == [b"first", b"second"] and records[1].image == path2
    (tmp_path / "t.jsonl").write_text(
        f'{{"img": "{path}", "cap": "x"}}\n\n{{"img": "{path2}", "cap": "y"}}\n'
    )
    records = read_table(tmp_path / "t.jsonl", image_column="img", caption_column="cap")
    assert len(records) == 2 and records[0].key == "t.jsonl:1" and records[1].key == "t.jsonl:3"


def test_malformed_tables_name_file_line_and_field(tmp_path):
    (tmp_path / "a.csv").write_text("image,caption\nx.jpg,hello\n")
    with pytest.raises(DataSourceError, match=r"a\.csv:2: field 'path': column missing"):
        read_table(tmp_path / "a.csv")
    (tmp_path / "b.jsonl").write_text('{"path": "x.jpg", "caption": "ok"}\n{"path": broken\n')
    skips = SkipCounter()
    assert (
        len(read_table(tmp_path / "b.jsonl", skips=skips)) == 1
    )  # one table reader, one policy: skip + count
    assert skips.as_dict() == {"bad_json": 1} and "b.jsonl:2: invalid JSON" in skips.examples["bad_json"][0]
    (tmp_path / "c.jsonl").write_text('{"path": broken\n')
    with pytest.raises(
        DataSourceError, match=r"c\.jsonl: no usable row: skipped 1 \(bad_json=1\); first: .*c\.jsonl:1"
    ):
        read_table(tmp_path / "c.jsonl")
    with pytest.raises(DataSourceError, match="table file not found"):
        read_table(tmp_path / "missing.csv")


def test_caption_folder_side_files(tmp_path, cifar_test_rows):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i, (path, _) in enumerate(cifar_test_rows[:6]):
        shutil.copy(path, folder / f"{i}.jpg")
        if i != 2:
            (folder / f"{i}.txt").write_bytes(b"caption %d" % i if i != 4 else b"   \n")
    skips = SkipCounter()
    records = read_caption_folder(folder, skips=skips)
    assert [r.key for r in records] == ["0.jpg", "1.jpg", "3.jpg", "4.jpg", "5.jpg"]
    decoded = decode_records(records, want_captions=True, num_workers=1, progress=False)
    skips.merge(decoded.skips)
    assert skips.as_dict() == {"empty_caption": 1, "missing_file": 1}
    assert decoded.captions == ["caption 0", "caption 1", "caption 3", "caption 5"]


def _fake_cifar(root: Path, rows) -> np.ndarray:
    """The real CIFAR python layout (dict of bytes keys), filled with 60 real test images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in rows[::16][:60]])
    labels = [label for _, label in rows[::16][:60]]
    flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    for i in range(5):
        part = slice(i * 10, (i + 1) * 10)
        batch = {
            b"batch_label": b"x",
            b"labels": labels[part],
            b"data": flat[part],
            b"filenames": [b"f"] * 10,
        }
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {b"labels": labels[50:], b"data": flat[50:]}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {b"label_names": [n.encode() for n in names], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return images


def test_cifar_python_folder_and_archive(tmp_path, cifar_test_rows):
    images = _fake_cifar(tmp_path / "dl", cifar_test_rows)
    train = load_cifar_python(tmp_path / "dl", "train")
    assert train.images.shape == (50, 32, 32, 3) and np.array_equal(train.images, images[:50])
    assert train.classes[9] == "truck"
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "dl" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for path in (archive, tmp_path / "dl", tmp_path / "dl" / "cifar-10-batches-py"):
        test = open_labelled_dataset(path, "test", progress=False)
        assert test.source.startswith("cifar-python") and len(test) == 10
        assert np.array_equal(test.images.numpy(), images[50:])


def test_cifar_unpickler_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(DataSourceError, match="refusing global builtins.print"):
        load_safe_pickle(pickle.dumps({b"data": Exploit()}), "evil")
    ok = load_safe_pickle(pickle.dumps({b"data": np.arange(3, dtype=np.uint8)}))
    assert ok["data"].tolist() == [0, 1, 2]


def test_open_labelled_dataset_layouts_agree(shared_data, tmp_path):
    by_table = open_labelled_dataset(
        shared_data / "cifar10", "test", cache_dir=tmp_path, num_workers=1, progress=False
    )
    by_folder = open_labelled_dataset(
        shared_data / "cifar10" / "images" / "test", "test", cache_dir=tmp_path, num_workers=1, progress=False
    )
    assert len(by_table) == len(by_folder) == 1000
    assert by_table.classes == by_folder.classes and by_table.classes[0] == "airplane"
    assert by_table.labels.bincount().tolist() == [100] * 10
    assert np.array_equal(by_table.images.numpy(), by_folder.images.numpy())  # same files, same order
    with pytest.raises(DataSourceError, match="no known layout"):
        (tmp_path / "empty").mkdir()
        open_labelled_dataset(tmp_path / "empty")


def test_retrieval_set_from_coco_mini(shared_data):
    test = load_retrieval_set(shared_data / "coco_captions_mini", "test")
    assert len(test.image_paths) == 100 and len(test.captions) == 500
    assert all(len(c) == 5 for c in test.image_captions)
    assert all(p.is_file() for p in test.image_paths[:5])
    everything = load_retrieval_set(shared_data / "coco_captions_mini" / "captions.csv", None)
    assert len(everything.image_paths) == 315 and len(everything.captions) == 1575


def test_skip_counter_merges_and_pickles():
    a, b = SkipCounter(), SkipCounter()
    a.add("corrupt_image", "x.jpg")
    b.add("corrupt_image")
    b.add("missing_file")
    a.merge(pickle.loads(pickle.dumps(b)))
    assert a.as_dict() == {"corrupt_image": 2, "missing_file": 1} and a.total == 3
    assert a.examples["corrupt_image"] == ["x.jpg"]
    assert io.StringIO(a.summary()).read() == "skipped 3 (corrupt_image=2, missing_file=1)"


def test_cifar100_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    generator = np.random.default_rng(0)
    for split, count in (("train", 7), ("test", 3)):
        data = generator.integers(0, 256, (count, 3072), dtype=np.uint8)
        batch = {b"data": data, b"fine_labels": list(range(count)), b"coarse_labels": [0] * count}
        (folder / split).write_bytes(pickle.dumps(batch))
    names = [f"c{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}))
    test = open_labelled_dataset(tmp_path, "test", progress=False)
    assert len(test) == 3 and len(test.classes) == 100 and test.labels.tolist() == [0, 1, 2]
    assert test.images[1, 0, 0].tolist() == data[1, [0, 1024, 2048]].tolist()  # CHW planes -> HWC


def test_broken_shard_is_a_clear_error(tmp_path):
    from clipforge.data import iter_shard

    bad = tmp_path / "train-0000.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DataSourceError, match=r"train-0000\.tar\.gz: unreadable tar shard after sample 0"):
        list(iter_shard(bad))
    with pytest.raises(DataSourceError, match=r"missing\.tar: data path not found"):
        open_labelled_dataset(tmp_path / "missing.tar")


def test_jsonl_label_table_with_class_names(tmp_path, cifar_test_rows):
    lines = [
        f'{{"path": "{p}", "label": {label}, "class_name": "c{label}"}}'
        for p, label in cifar_test_rows[::100]
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    data = open_labelled_dataset(tmp_path, "train", cache_dir=tmp_path / "c", num_workers=1, progress=False)
    assert len(data) == 10 and data.classes == [f"c{i}" for i in range(10)]
    assert data.labels.tolist() == list(range(10))
