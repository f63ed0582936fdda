"""Fault corpus, part 4 (issue #15 class 5): text encodings and table formats. One table reader
(clipforge.data.csvjsonl) and one policy on every surface: a byte-order mark is dropped, another encoding is
named with file and line, a malformed row is skipped and counted by reason with its line, and a run fails
only when nothing usable remains."""

from __future__ import annotations

import csv
import json
import os
import re

import pytest
from fault_helpers import error_lines, fresh_dir, run_cli, workspace

pytest.importorskip("pyarrow")

BOM = "\ufeff"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


def classify_with(ws, work, *extra):
    out = work / "p.json"
    rc, _, err = run_cli(["classify", ws["images"], "--checkpoint", ws["tiny_pt"], "--quiet", "--no-cache",
                          "--output", out, *extra])  # fmt: skip
    return rc, err, (json.loads(out.read_text()) if out.is_file() else None)


def embed_table(ws, work, table, *extra):
    out = work / "e"
    rc, _, err = run_cli(["embed", table, "--out", out, "--checkpoint", ws["tiny_pt"], "--quiet", "--metadata",
                          "parquet", *extra])  # fmt: skip
    return rc, err, out


def one_error(err: str) -> str:
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ((BOM + "cat\ndog\n").encode(), {"cat", "dog"}),  # Excel / Notepad "UTF-8 with BOM"
        (b"cat\r\ndog\r\n", {"cat", "dog"}),  # Windows line ends
        (b"# animals\n\ncat\n  dog  \n# done\n", {"cat", "dog"}),  # comments, blanks, spaces
        ("caf\u00e9 au lait\nespresso\n".encode(), {"caf\u00e9 au lait", "espresso"}),  # real UTF-8
    ],
    ids=["bom", "crlf", "comments", "utf8-accents"],
)
def test_labels_file_is_read_as_the_user_wrote_it(ws, tmp_path, content, expected):
    work = fresh_dir(tmp_path)
    (work / "labels.txt").write_bytes(content)
    rc, err, result = classify_with(ws, work, "--labels", work / "labels.txt")
    assert rc == 0, err
    assert {row["label"] for row in result["predictions"]} | {
        row["label_2"] for row in result["predictions"]
    } == expected


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("labels.txt", "cat\ncaf\u00e9\n".encode("latin-1"), r"labels\.txt:2: labels file is not UTF-8 \(byte 0xe9 at offset 7\)"),
        ("labels.txt", "cat\ndog\n".encode("utf-16"), r"labels\.txt:1: labels file is not UTF-8 \(byte 0xff at offset 0\)"),
        ("templates.txt", "a photo of a {}\n\u00e0 {}\n".encode("latin-1"), r"templates\.txt:2: templates file is not UTF-8"),
    ],
    ids=["labels-latin1", "labels-utf16", "templates-latin1"],
)  # fmt: skip
def test_label_and_template_files_in_another_encoding_name_file_and_line(
    ws, tmp_path, name, content, pattern
):
    work = fresh_dir(tmp_path)
    (work / name).write_bytes(content)
    flags = (
        ["--labels", work / name]
        if name.startswith("labels")
        else ["--labels", "cat,dog", "--templates", work / name]
    )
    rc, err, _ = classify_with(ws, work, *flags)
    assert rc == 1 and re.search(pattern, one_error(err))


def test_templates_file_with_bom(ws, tmp_path):
    work = fresh_dir(tmp_path)
    (work / "t.txt").write_bytes((BOM + "a photo of a {}.\na drawing of a {}.\n").encode())
    rc, err, result = classify_with(ws, work, "--labels", "cat,dog", "--templates", work / "t.txt")
    assert rc == 0 and len(result["predictions"]) == 6, err


def _rows(ws, n=3):
    cat = ws["one_image"]
    return [f"{cat},cat number {i}" for i in range(n)]


@pytest.mark.parametrize(
    ("name", "text", "rows", "skipped"),
    [
        ("bom.csv", BOM + "path,caption\n{r0}\n{r1}\n", 2, []),
        ("plain.tsv", "path\tcaption\n{t0}\n{t1}\n", 2, []),
        ("quote.csv", 'path,caption\n{cat},"a cat\n{r1}\n{cat},a dog"\n{r2}\n', 1, [("unbalanced_quote", 2)]),
        ("extra.csv", "path,caption\n{cat},a cat, on a mat\n{r1}\n", 1, [("extra_fields", 2)]),
        ("nested.jsonl", '{{"path": "{cat}", "tags": ["a", "b"], "meta": {{"w": 40}}}}\n', 1, []),
        ("mixed.jsonl", '{{"path": "{cat}", "id": 1}}\n{{"path": "{cat}", "id": "x-2"}}\n', 2, []),
        ("badline.jsonl", '{{"path": "{cat}"}}\n{{"path": broken\n[1, 2]\n', 1, [("bad_json", 2), ("bad_json", 3)]),
        ("bom.jsonl", BOM + '{{"path": "{cat}"}}\n', 1, []),
    ],
    ids=["csv-bom", "tsv", "unbalanced-quote", "extra-fields", "jsonl-nested", "jsonl-mixed-types", "jsonl-bad-lines",
         "jsonl-bom"],
)  # fmt: skip
def test_embed_tables_one_reader_one_policy(ws, tmp_path, name, text, rows, skipped):
    work = fresh_dir(tmp_path)
    cat = str(ws["one_image"])
    fills = {
        "cat": cat,
        **{f"r{i}": r for i, r in enumerate(_rows(ws))},
        **{f"t{i}": r.replace(",", "\t") for i, r in enumerate(_rows(ws))},
    }
    table = work / name
    table.write_text(text.format(**fills), encoding="utf-8")
    rc, err, out = embed_table(ws, work, table)
    assert rc == 0, err
    from clipforge.apps.embed import load_embeddings

    vectors, meta = load_embeddings(out)
    assert len(vectors) == len(meta) == rows
    listed = list(csv.DictReader((out / "skipped.csv").open()))
    assert [(r["reason"], int(r["path"].rsplit(":", 1)[1])) for r in listed] == skipped
    assert all(r["error"].startswith(f"{table}:") for r in listed)
    if name == "nested.jsonl":
        assert json.loads(meta[0]["tags"]) == ["a", "b"] and json.loads(meta[0]["meta"]) == {"w": 40}
    if name.startswith("bom"):
        assert "path" in meta[0]  # not '\ufeffpath'


@pytest.mark.parametrize(
    ("name", "data", "pattern"),
    [
        ("utf16.csv", "path,caption\nx.jpg,a cat\n".encode("utf-16"), r"utf16\.csv: is UTF-16 text; save it as UTF-8"),
        ("nul.csv", b"path,caption\nx\0.jpg,a cat\n", r"none of the inputs of .*nul\.csv could be embedded: 1 skipped \(1 unreadable\)"),
        ("header.csv", b"path,caption\n", r"header\.csv: the table has no usable rows"),
        ("allbad.jsonl", b"not json\n{also not\n", r"allbad\.jsonl: the table has no usable rows \(2 malformed rows; first: .*allbad\.jsonl:1: invalid JSON"),
        ("empty.csv", b"", r"empty\.csv:1: empty table: no header row"),
        ("texts.txt", "first line\ncaf\u00e9\n".encode("latin-1"), r"texts\.txt:2: text file is not UTF-8 \(byte 0xe9"),
        ("table.xlsx", b"PK\x03\x04", r"table\.xlsx: a table must be \.csv, \.tsv, \.jsonl \(optionally \.gz\) or \.txt"),
    ],
    ids=["utf16", "nul-byte", "header-only", "all-rows-bad", "empty-file", "txt-latin1", "spreadsheet"],
)  # fmt: skip
def test_unusable_tables_are_one_line_naming_the_file(ws, tmp_path, name, data, pattern):
    work = fresh_dir(tmp_path)
    (work / name).write_bytes(data)
    kind = ["--kind", "text"] if name.endswith(".txt") else []
    rc, err, _ = embed_table(ws, work, work / name, *kind)
    assert rc == 1 and re.search(pattern, one_error(err)), err[-1500:]


def test_text_file_with_bom_embeds_the_text_not_the_mark(ws, tmp_path):
    import numpy as np
    import torch

    from clipforge.apps.embed import load_embeddings
    from clipforge.checkpoints import load_any
    from clipforge.encode import encode_texts

    work = fresh_dir(tmp_path)
    (work / "t.txt").write_bytes((BOM + "a photo of a cat\na dog\n").encode())
    rc, err, out = embed_table(ws, work, work / "t.txt", "--kind", "text", "--dtype", "float32")
    assert rc == 0, err
    vectors, meta = load_embeddings(out)
    assert [m["text"] for m in meta] == ["a photo of a cat", "a dog"]
    with torch.inference_mode():
        expected = encode_texts(load_any(ws["tiny_pt"]), ["a photo of a cat", "a dog"]).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_a_non_utf8_path_cell_still_opens_its_file(ws, tmp_path):
    from clipforge.apps.embed import load_embeddings

    work = fresh_dir(tmp_path)
    name = os.fsdecode(b"chat-\xe9t\xe9.jpg")  # a Latin-1 file name, and the table holds the same bytes
    (work / name).write_bytes(ws["one_image"].read_bytes())
    (work / "t.csv").write_bytes(b"path,caption\nchat-\xe9t\xe9.jpg,a cat\n")
    rc, err, out = embed_table(ws, work, work / "t.csv")
    assert rc == 0, err
    vectors, meta = load_embeddings(out)
    assert len(vectors) == 1 and meta[0]["path"] == "chat-\\xe9t\\xe9.jpg"  # stored escaped, readable


@pytest.mark.parametrize(
    ("name", "text", "dropped", "kept"),
    [
        ("quote.csv", 'path,caption\n{c0},"a cat\n{d0},a dog"\n{c1},a cat\n', {"unbalanced_quote": 1}, 1),
        ("bom.csv", BOM + "path,caption\n{c0},a cat\n{d0},a dog\n", {}, 2),
        ("lines.jsonl", '{{"path": "{c0}", "caption": "a cat"}}\n{{broken\n[1]\n', {"bad_json": 2}, 1),
    ],
    ids=["unbalanced-quote", "bom", "jsonl-bad-lines"],
)
def test_curate_reads_tables_by_the_same_policy(ws, tmp_path, name, text, dropped, kept):
    """curate: the same reader as embed -- a BOM is dropped, malformed rows are counted by reason among the
    drops (stats.json) and the run goes on with the usable rows."""
    work = fresh_dir(tmp_path)
    images = ws["images"]
    fills = {
        "c0": images / "cats" / "cat0.jpg",
        "c1": images / "cats" / "cat1.jpg",
        "d0": images / "dogs" / "dog0.jpg",
    }
    (work / name).write_text(text.format(**fills), encoding="utf-8")
    (work / "q.txt").write_text("cat\ndog\n")
    rc, _, err = run_cli(["curate", "--input", work / name, "--queries", work / "q.txt", "--out", work / "out",
                          "--min-image-side", "1"])  # fmt: skip
    assert rc == 0, err[-2000:]
    stats = json.loads((work / "out" / "stats.json").read_text())
    assert stats["dropped"] == dropped and stats["kept"] == kept, stats
    lines = {"quote.csv": [2], "bom.csv": [], "lines.jsonl": [2, 3]}[name]
    assert stats["malformed_rows"] == [f"{name}:line{n} ({next(iter(dropped))})" for n in lines]  # file:line
