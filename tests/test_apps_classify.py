"""`clipforge classify` on real CIFAR-10 test images: accuracy above chance, outputs, skipping, sorting."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from test_apps_helpers import cached_tiny_clip

from clipforge.commands.classify import main


@pytest.fixture(scope="module")
def checkpoint(shared_data, tmp_path_factory):
    from clipforge.checkpoints import save

    model = cached_tiny_clip(shared_data, tmp_path_factory.getbasetemp().parent)
    return str(save(model, tmp_path_factory.mktemp("ckpt") / "tiny.pt"))


def test_classify_folder_beats_chance_and_writes_json(checkpoint, shared_data, tmp_path):
    folder = shared_data / "cifar10" / "images" / "test"
    out = tmp_path / "preds.json"
    result = main(
        [
            str(folder),
            "--labels",
            str(shared_data / "cifar10" / "classes.txt"),
            "--checkpoint",
            checkpoint,
            "--output",
            str(out),
            "--quiet",
            "--no-cache",
            "--top-k",
            "3",
        ]
    )
    rows = json.loads(out.read_text())["predictions"]
    assert len(rows) == result["num_images"] == 1000 and not result["failures"]
    accuracy = sum(r["label"] == r["path"].split("/")[-2] for r in rows) / len(rows)
    print(f"zero-shot top-1 on CIFAR-10 test: {accuracy:.3f}")
    assert accuracy >= 0.2  # chance is 0.1; 1000 images make 0.2 a > 10-sigma margin
    assert all(r["prob"] >= r["prob_2"] >= r["prob_3"] for r in rows)


def test_glob_csv_skips_unreadable_and_sorts_without_overwriting(checkpoint, shared_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("cat", "ship"):
        first = sorted((shared_data / "cifar10" / "images" / "test" / name).iterdir())[0]
        shutil.copy(first, src / f"{name}.jpg")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    dest = tmp_path / "sorted"
    argv = [
        str(src / "*.jpg"),
        "--labels",
        "cat, ship, truck",
        "--checkpoint",
        checkpoint,
        "--quiet",
        "--no-cache",
        "--output",
        str(tmp_path / "p.csv"),
        "--move-into",
        str(dest),
    ]
    first = main(argv)
    assert [f["path"] for f in first["failures"]] == [str(src / "broken.jpg")]
    with (tmp_path / "p.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(src / "cat.jpg"), str(src / "ship.jpg")]
    assert set(rows[0]) == {"path", "label", "prob", "label_2", "prob_2", "label_3", "prob_3"}
    main(argv)  # second run: same names again -> suffixed copies, nothing overwritten
    placed = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg"))
    labels = {r["path"].split("/")[-1][:-4]: r["label"] for r in rows}
    assert placed == sorted(f"{labels[n]}/{n}{s}.jpg" for n in ("cat", "ship") for s in ("", "-1"))
    assert (src / "cat.jpg").is_file()  # copied, not moved
    moved = main(
        [
            str(src / "cat.jpg"),
            "--labels",
            "cat,ship,truck",
            "--checkpoint",
            checkpoint,
            "--quiet",
            "--no-cache",
            "--move-into",
            str(dest),
            "--move",
        ]
    )
    assert not (src / "cat.jpg").exists() and moved["placed"][0]["destination"].endswith(
        f"{labels['cat']}/cat-2.jpg"
    )


def test_bad_arguments_name_the_problem(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        main([str(tmp_path / "nothing-here"), "--labels", "a,b", "--checkpoint", checkpoint])
    with pytest.raises(ValueError, match="duplicate labels"):
        main([str(tmp_path), "--labels", "a,b,a", "--checkpoint", checkpoint])
    with pytest.raises(ValueError, match="--move needs --move-into"):
        main([str(tmp_path), "--labels", "a,b", "--move", "--checkpoint", checkpoint])
