"""Evaluation dataset adapters: real CIFAR-10 in two layouts, CIFAR python batches, shift-set layouts."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from clipforge.evaluate.datasets import MissingDataError, build_eval_dataset, cifar, csv_dataset
from clipforge.zeroshot.classnames import imagenet_wnids, subset_indices


def test_shared_cifar10_folder_and_csv_agree(shared_data):
    folder = cifar(shared_data / "cifar10", "test")
    table = csv_dataset(shared_data / "cifar10" / "test.csv")
    assert len(folder) == len(table) == 1000
    assert folder.classes == table.classes == (shared_data / "cifar10" / "classes.txt").read_text().split()
    assert sorted((p.resolve(), y) for p, y in folder.samples) == sorted(
        (p.resolve(), y) for p, y in table.samples
    )
    image, label = folder[0]
    assert image.size == (32, 32) and label == 0


def _write_batch(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar_python_batches_and_refusal(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    _write_batch(folder / "test_batch", {b"data": data, b"labels": [3, 1, 4, 1]})
    _write_batch(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    ds = cifar(tmp_path, "test")
    assert ds.labels == [3, 1, 4, 1] and ds.classes[3] == "c3"
    image, _ = ds[1]
    assert np.array_equal(np.asarray(image), data[1].reshape(3, 32, 32).transpose(1, 2, 0))

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    _write_batch(folder / "test_batch", {b"data": Evil(), b"labels": []})
    with pytest.raises(Exception, match="refusing"):  # ours or clipforge.data's safe unpickler
        cifar(tmp_path, "test")


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)


def test_shift_layouts_and_subset_labels(tmp_path):
    wnids, r = imagenet_wnids(), subset_indices("imagenet-r")
    _image(tmp_path / "imagenet-r" / wnids[r[0]] / "a.jpg")
    _image(tmp_path / "imagenet-r" / wnids[r[5]] / "b.jpg")
    ds = build_eval_dataset("imagenet-r", tmp_path)
    assert len(ds.classes) == 200 and ds.labels == [0, 5] and ds.class_groups[5] == [r[5]]

    _image(tmp_path / "imagenetv2-matched-frequency-format-val" / "7" / "x.jpeg")
    assert build_eval_dataset("imagenet-v2", tmp_path).labels == [7]

    _image(tmp_path / "objectnet-1.0" / "images" / "alarm_clock" / "a.png")
    _image(tmp_path / "objectnet-1.0" / "images" / "not_in_imagenet" / "b.png")  # outside the 113: skipped
    objectnet = build_eval_dataset("objectnet", tmp_path)
    assert len(objectnet) == 1 and len(objectnet.classes) == 113
    assert objectnet.class_groups[objectnet.labels[0]] == [409, 530]


def test_missing_data_says_where_to_put_it(tmp_path):
    with pytest.raises(MissingDataError, match=r"imagenet-a.*hendrycks"):
        build_eval_dataset("imagenet-a", tmp_path)
    with pytest.raises(MissingDataError, match="cs.toronto.edu"):
        cifar(tmp_path, "test", num_classes=100)
    with pytest.raises(KeyError, match="valid: imagefolder, csv"):
        build_eval_dataset("mnist", tmp_path)
