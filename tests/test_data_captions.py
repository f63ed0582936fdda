"""Image–caption tables: several captions per image, one per epoch (all used, exact under resume), split filter,
bad rows and images skipped and counted with file:line; and `clipforge train` on such a table and on shards."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import pytest
import torch

from clipforge.data import DataSourceError, ImageCaptions, open_caption_table, read_caption_table
from clipforge.overrides import load_config
from clipforge.train import TrainConfig, fit
from clipforge.train.state import load_state


def _tokens(texts):  # a stand-in tokenizer: one row per text, tied to the text
    return torch.tensor([[len(t), sum(map(ord, t)) % 9973] for t in texts])


def test_each_caption_is_used_once_per_k_epochs_and_orders_reshuffle():
    counts = [5, 1, 3, 4, 5, 2] * 5
    captions = ImageCaptions([[f"{i}-{j}" for j in range(k)] for i, k in enumerate(counts)], seed=7)
    index = torch.arange(len(counts))
    picks = torch.stack([captions.caption_index(index, epoch) for epoch in range(60)])  # (epochs, images)
    for i, k in enumerate(counts):
        for cycle in range(60 // k):
            assert sorted(picks[cycle * k : cycle * k + k, i].tolist()) == list(range(k)), (i, cycle)
    fives = [i for i, k in enumerate(counts) if k == 5]
    orders = {tuple(picks[c * 5 : c * 5 + 5, i].tolist()) for i in fives for c in range(12)}
    assert len(orders) > 20  # reshuffled per image and per cycle, not one fixed order
    again = ImageCaptions(captions.captions, seed=7)
    assert torch.equal(again.caption_index(index.flip(0), 13), picks[13].flip(0))  # pure function of the key
    other = ImageCaptions(captions.captions, seed=8)
    assert not torch.equal(other.caption_index(index, 1), picks[1])


def test_tokens_are_the_chosen_captions():
    captions = ImageCaptions([["a dog runs .", "a brown dog ."], ["two people ."]], tokenizer=_tokens)
    for epoch in range(4):
        chosen = [captions.caption(-1, i, epoch) for i in range(2)]
        assert torch.equal(
            captions.tokens(torch.tensor([-1, -1]), torch.tensor([0, 1]), epoch), _tokens(chosen)
        )
    assert captions.texts == ["a dog runs .", "a brown dog .", "two people ."]


@pytest.fixture(scope="module")
def flickr(shared_data) -> Path:
    return shared_data / "flickr8k" / "captions.csv"


def test_flickr8k_table_groups_five_captions_per_image_by_split(flickr):
    train = read_caption_table(flickr, "train")
    val = read_caption_table(flickr, "val")
    assert len(train.records) == 6000 and len(val.records) == 1000
    assert all(len(c) == 5 for c in train.captions + val.captions)
    assert not {r.image for r in train.records} & {r.image for r in val.records}
    assert train.records[0].key == "captions.csv:2" and train.skips.total == 0
    with pytest.raises(
        DataSourceError, match=r"captions\.csv: field 'split': the table has splits \['train', "
    ):
        read_caption_table(flickr)  # training on both splits by accident is refused
    with pytest.raises(DataSourceError, match="no row has split 'test'"):
        read_caption_table(flickr, "test")


def _write_table(folder: Path, flickr: Path, images: int, damage: bool = False) -> Path:
    """`images` Flickr8k train images x 5 captions as a small CSV in `folder` (absolute image paths)."""
    with open(flickr, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"][: images * 5]
    for row in rows:
        row["path"] = str(flickr.parent / row["path"])
    if damage:
        (folder / "broken.jpg").write_bytes(b"not a jpeg")
        rows[7]["caption"] = "   "  # an empty caption: that row only
        rows[10]["path"] = ""  # no path
        rows += [
            {**rows[0], "path": str(folder / name), "caption": "a photo .", "image_id": name}
            for name in ("broken.jpg", "missing.jpg")
        ]
    table = folder / "pairs.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if damage:  # a non-UTF-8 caption (line 2)
        table.write_bytes(table.read_bytes().replace(b"climbing up", b"climbing \xff up"))
    return table


def test_bad_rows_and_images_are_skipped_and_counted_with_file_and_line(tmp_path, flickr):
    table = _write_table(tmp_path, flickr, images=6, damage=True)
    data, captions = open_caption_table(table, "train", image_size=32, cache_dir=tmp_path / "cache",
                                        num_workers=1, progress=False, tokenizer=_tokens)  # fmt: skip
    assert data.skips.as_dict() == {
        "corrupt_image": 1, "empty_caption": 1, "missing_field": 1, "missing_file": 1, "non_utf8_caption": 1,
    }  # fmt: skip
    examples = data.skips.examples
    assert examples["empty_caption"] == ["pairs.csv:9"] and "pairs.csv:12" in examples["missing_field"][0]
    assert (
        examples["missing_file"][0].startswith("pairs.csv:33: ")
        and "missing.jpg" in examples["missing_file"][0]
    )
    assert examples["corrupt_image"][0].startswith("pairs.csv:32: ")
    assert examples["non_utf8_caption"] == ["pairs.csv:2"]
    assert len(data) == 6 and data.images.shape == (6, 32, 32, 3)
    assert [len(c) for c in captions.captions] == [4, 4, 4, 5, 5, 5]  # rows of lines 2, 9, 12 dropped
    with pytest.raises(DataSourceError, match="no usable image"):
        broken = tmp_path / "broken.csv"
        broken.write_text(f"path,caption\n{tmp_path / 'broken.jpg'},a photo .\n")
        open_caption_table(broken, image_size=32, cache_dir=tmp_path / "cache", num_workers=1, progress=False)


def test_decode_cache_is_memory_mapped(tmp_path, flickr):
    import numpy as np

    table = _write_table(tmp_path, flickr, images=4)
    kwargs = dict(
        image_size=32, cache_dir=tmp_path / "cache", num_workers=1, progress=False, tokenizer=_tokens
    )
    first, _ = open_caption_table(table, "train", **kwargs)
    again, _ = open_caption_table(table, "train", **kwargs)  # from the cache
    for data in (first, again):  # the pixels live in a mapping of the cache's images.npy, not on the heap
        assert _mapped_file(data.images.data_ptr()).name == "images.npy"
    assert torch.equal(first.images, again.images)
    assert np.array_equal(np.load(_mapped_file(first.images.data_ptr())), first.images.numpy())


def _mapped_file(address: int) -> Path | None:
    """The file mapped at `address` in this process (Linux /proc/self/maps), None for anonymous memory."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high:
            return Path(fields[5]) if len(fields) > 5 and fields[5].startswith("/") else None
    return None


TABLE_RUN = [
    "model.context_length=20", "data.kind=table", "data.split=train", "data.decode_size=48",
    "data.augment.kind=resized_crop_flip", "data.batch_size=8", "data.num_workers=1", "epochs=3",
    "optim.warmup_steps=2", "checkpoint.every_steps=4", "log.progress=false", "log.plot=false", "device=cpu",
    "precision=fp32",
]  # fmt: skip


def test_train_on_a_caption_table_resumes_caption_sampling_exactly(tmp_path, flickr):
    """24 images x 5 captions, 3 epochs of 3 steps: killed at step 7 (mid-epoch 2), resumed from step 4."""
    table = _write_table(tmp_path, flickr, images=24)

    def run(output_dir, *extra, abort_at=None):
        texts = []

        def record(event, info):
            if event == "step":
                texts.append((info["batch"]["index"].tolist(), info["batch"]["text"].clone()))
                if info["step"] == abort_at:
                    raise KeyboardInterrupt

        config = load_config(TrainConfig, None, [*TABLE_RUN, f"data.path={table}",
                             f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={output_dir}", *extra])  # fmt: skip
        return fit(config, callbacks=(record,)), texts

    reference, seen = run(tmp_path / "ref")
    assert reference["steps"] == 9 and reference["data_skips"] == {}
    by_image: dict[int, set] = {}
    for index, text in seen:
        for i, row in zip(index, text):
            by_image.setdefault(i, set()).add(tuple(row.tolist()))
    assert all(len(v) == 3 for v in by_image.values())  # 3 epochs: 3 different captions of each image
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", abort_at=7)
    resumed, rest = run(tmp_path / "cut", "checkpoint.resume=auto")
    assert [i for i, _ in rest] == [i for i, _ in seen[4:]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(rest, seen[4:], strict=True))
    expected, final = load_state(reference["checkpoint"])["model"], load_state(resumed["checkpoint"])["model"]
    assert all(torch.equal(final[k], v) for k, v in expected.items())


def test_train_on_image_caption_shards(tmp_path, flickr):
    with open(flickr, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["caption_idx"] == "0"][:16]
    shard = tmp_path / "pairs-0000.tar"
    with tarfile.open(shard, "w") as tar:
        for n, row in enumerate(rows):
            for ext, data in (
                ("jpg", (flickr.parent / row["path"]).read_bytes()),
                ("txt", row["caption"].encode()),
            ):
                info = tarfile.TarInfo(f"{n:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    overrides = [o for o in TABLE_RUN if not o.startswith(("data.kind", "data.split"))]
    config = load_config(TrainConfig, None, [*overrides, "data.kind=shards", f"data.path={shard}", "max_steps=2",
                         f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}"])  # fmt: skip
    results = fit(config)
    assert results["steps"] == 2 and results["images_seen"] == 16 and results["final_loss"] > 0
