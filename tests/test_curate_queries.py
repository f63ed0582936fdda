"""Query lists from a file or built from the corpus; the CLI end to end on a small input."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
from PIL import Image

from clipforge.commands.curate import main as curate_main
from clipforge.curate.queries import build_queries, load_queries


def test_load_queries(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("# comment\nHot Dog\n\nhot-dog\nzebra\n  \nZEBRA!\n")
    assert load_queries(path) == ["hot dog", "zebra"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.txt: no queries"):
        load_queries(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_queries(tmp_path / "nope.txt")


def test_build_queries_on_coco(shared_data):
    with gzip.open(shared_data / "coco_captions_mini" / "coco_val2017_all_captions.csv.gz", "rt") as f:
        captions = [row["caption"] for row in csv.DictReader(f)]
    queries = build_queries(captions, word_lists=[["Teddy Bear", "okapi"]], min_count=30, max_ngram=3)
    assert queries[:2] == ["teddy bear", "okapi"]  # word lists first, kept whole
    assert {"fire hydrant", "hot dog", "stop sign", "giraffe"} <= set(queries)  # high-PMI bigrams
    assert not {"the", "of the", "on a", "a", "in"} & set(queries)  # stop words / stop-word n-grams
    assert "a man" not in queries and len(queries) == len(set(queries))
    capped = build_queries(captions, min_count=30, max_queries=50)
    assert capped == [q for q in queries if q not in ("teddy bear", "okapi")][:50]


def test_cli_builds_queries_and_curates(tmp_path):
    rows = []
    for i in range(12):
        pixels = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((40, 40)).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "caption": f"a {'red' if i % 2 else 'blue'} kite number {i}"})
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    stats = curate_main(["--input", str(tmp_path / "pairs.jsonl"), "--out", str(out), "--build-queries",
                         "--min-count", "6", "--cap", "3", "--shard-size", "2"])  # fmt: skip
    assert (out / "queries.txt").read_text().split("\n")[:4] == ["kite", "number", "blue", "red"]
    assert stats["accounted"] and stats["kept"] >= 3
    assert stats["kept"] + stats["dropped"]["balanced_out"] == 12
    with pytest.raises(ValueError, match="--queries FILE or --build-queries"):
        curate_main(["--input", str(tmp_path / "pairs.jsonl"), "--out", str(out)])
