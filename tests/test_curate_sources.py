"""Every input format yields the same pairs; files are split between ranks without overlap."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipforge.curate.sources import assign_files, iter_pairs, list_input_files, rank_from_env

ROWS = [{"url": f"img/{i}.jpg", "text": f"caption number {i}, with a comma"} for i in range(5)]


def _write_all(folder):
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    with gzip.open(folder / "b.csv.gz", "wt", newline="") as f:
        writer = csv.DictWriter(f, ["url", "text"])
        writer.writeheader()
        writer.writerows(ROWS)
    with open(folder / "c.tsv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["url", "text"], delimiter="\t")
        writer.writeheader()
        writer.writerows(ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), folder / "d.parquet")
    with tarfile.open(folder / "e.tar", "w") as tar:
        for i, row in enumerate(ROWS):
            for name, data in ((f"s{i}.jpg", b"JPEGDATA%d" % i), (f"s{i}.txt", row["text"].encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (folder / "notes.md").write_text("not an input")


def test_formats_agree(tmp_path):
    _write_all(tmp_path)
    files = list_input_files([tmp_path])
    assert [f.name for f in files] == ["a.jsonl", "b.csv.gz", "c.tsv", "d.parquet", "e.tar"]
    expected_captions = [r["text"] for r in ROWS]
    for path in files[:4]:
        pairs = list(iter_pairs(path))
        assert [p.caption for p in pairs] == expected_captions, path
        assert [p.image for p in pairs] == [str(tmp_path / r["url"]) for r in ROWS]
        assert [p.key for p in pairs] == [f"{path.name}:{i}" for i in range(5)]
    tar_pairs = list(iter_pairs(files[4]))
    assert [p.caption for p in tar_pairs] == expected_captions
    assert [p.image_bytes for p in tar_pairs] == [b"JPEGDATA%d" % i for i in range(5)]
    assert tar_pairs[2].key == "e.tar:s2"


def test_field_errors_name_the_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"picture": "a.jpg", "text": "hi there"}\nnot json\n')
    with pytest.raises(ValueError, match=r"x.jsonl: no image field among \['picture', 'text'\]"):
        list(iter_pairs(path))
    pairs = iter_pairs(path, image_field="picture")
    assert next(pairs).caption == "hi there"
    bad = next(pairs)  # a malformed row is a pair with its problem: curate counts it among the drops (#15.5)
    assert (bad.key, bad.problem, bad.caption) == ("x.jsonl:line2", "bad_json", None)
    assert list(pairs) == []
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list_input_files([tmp_path / "nothing*.csv"])


def test_rank_assignment_partitions_files(tmp_path):
    files = [tmp_path / f"{i:03d}.tar" for i in range(11)]
    shares = [assign_files(files, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == files
    assert [len(s) for s in shares] == [4, 4, 3]
    assert rank_from_env({"RANK": "2", "WORLD_SIZE": "4"}) == (2, 4)
    assert rank_from_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}) == (1, 2)
    assert rank_from_env({}) == (0, 1)
    with pytest.raises(ValueError, match="outside"):
        rank_from_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_undecodable_caption_is_read_then_dropped_by_reason(tmp_path):
    from clipforge.curate.clean import CleanConfig, caption_problem

    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"url": "a.jpg", "caption": "a dog on a beach"}\n')
        f.write(b'{"url": "b.jpg", "caption": "a cat \xff\xfe on a sofa"}\n')
    pairs = list(iter_pairs(path))  # one bad caption does not stop the file
    assert [p.key for p in pairs] == ["bad.jsonl.gz:0", "bad.jsonl.gz:1"]
    assert caption_problem(pairs[0].caption, CleanConfig()) is None
    assert caption_problem(pairs[1].caption, CleanConfig()) == "caption_undecodable"
