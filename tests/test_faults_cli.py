"""Fault corpus, part 1 (issue #15 classes 2, 6, 9 and the CLI's error policy): no silent defaults, argument
validation up front and alike on every command, skipped inputs reported, one line for expected errors and a
traceback for bugs. Each case asserts the exit status and the one error line's content."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fault_helpers import error_lines, fresh_dir, run_cli, workspace

LABELS_30 = ",".join(
    f"{a} {b}"
    for a in ("red", "green", "blue", "small", "large", "old")
    for b in ("car", "dog", "cat", "ship", "tree")
)


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[dict, object], list]
    rc: int
    patterns: tuple[str, ...]  # regexes the single error line must match


def ck(ws, d):
    return ["--checkpoint", ws["tiny_pt"]]


def classify(*extra):
    return lambda ws, d: ["classify", ws["images"], "--quiet", "--no-cache", *ck(ws, d), *extra]


def labelled(*extra):
    return classify("--labels", "cat,dog", *extra)


REFUSED = [
    # class 2: weights are never chosen for the user; labels mean the same on every surface
    Case(
        "no-weights-classify",
        lambda ws, d: ["classify", ws["images"], "--labels", "cat,dog"],
        1,
        (r"no model weights given", r"--random-weights"),
    ),
    Case(
        "no-weights-embed",
        lambda ws, d: ["embed", ws["images"], "--out", d / "e"],
        1,
        (r"no model weights given",),
    ),
    Case("no-weights-serve", lambda ws, d: ["serve", "--port", "0"], 1, (r"no model weights given",)),
    Case(
        "no-weights-export", lambda ws, d: ["export-onnx", "--out", d / "o"], 1, (r"no model weights given",)
    ),
    Case(
        "preset-without-weights",
        lambda ws, d: ["classify", ws["images"], "--labels", "a,b", "--model", "tiny-vit"],
        1,
        (r"--model tiny-vit: no model weights given",),
    ),
    Case(
        "random-weights-without-model",
        lambda ws, d: ["classify", ws["images"], "--labels", "a,b", "--random-weights"],
        1,
        (r"need --model NAME",),
    ),
    Case(
        "pretrained-and-random",
        lambda ws, d: [
            "classify",
            ws["images"],
            "--labels",
            "a,b",
            "--model",
            "tiny-vit",
            "--pretrained",
            "openai",
            "--random-weights",
        ],
        1,
        (r"contradict",),
    ),
    Case(
        "checkpoint-and-random",
        classify("--labels", "a,b", "--random-weights"),
        1,
        (r"carries its own weights",),
    ),
    Case(
        "eval-without-weights",
        lambda ws, d: ["eval", "zeroshot", "--model", "tiny-vit", "--out", d],
        1,
        (r"--model tiny-vit: no model weights given",),
    ),
    Case("one-label", classify("--labels", "cat"), 1, (r"--labels: one label \('cat'\) always scores 1\.0",)),
    Case("duplicate-labels", classify("--labels", "cat,dog,cat"), 1, (r"duplicate labels \['cat'\]",)),
    Case(
        "case-twin-labels", classify("--labels", "Cat,dog,cat"), 1, (r"'Cat' and 'cat' differ only in case",)
    ),
    Case(
        "space-twin-labels",
        classify("--labels", "sea lion,sea  lion"),
        1,
        (r"differ only in case or spacing",),
    ),
    Case(
        "labels-same-after-truncation",
        lambda ws, d: [
            "classify",
            ws["images"],
            "--quiet",
            "--no-cache",
            "--checkpoint",
            ws["short_st"],
            "--labels",
            "a tabby cat sitting on a red sofa in the sun at noon,"
            "a tabby cat sitting on a red sofa in the sun at night",
        ],
        1,
        (r"same to the model", r"16-token context"),
    ),
    Case("empty-labels", classify("--labels", ""), 1, (r"no labels found",)),
    Case("only-commas", classify("--labels", ",, ,"), 1, (r"no labels found",)),
    Case("template-without-slot", labelled("--templates", "a photo"), 1, (r"needs a '\{\}'",)),
    Case("duplicate-templates", labelled("--templates", "a {}|a {}"), 1, (r"duplicate templates",)),
    Case(
        "unknown-preset",
        lambda ws, d: ["classify", ws["images"], "--labels", "a,b", "--model", "nope", "--random-weights"],
        1,
        (r"unknown model 'nope'; available:",),
    ),
    Case(
        "missing-checkpoint",
        lambda ws, d: ["classify", ws["images"], "--labels", "a,b", "--checkpoint", d / "x.pt"],
        1,
        (r"--checkpoint .*x\.pt: no such file or folder",),
    ),
    # class 6: numbers refused by argparse on every command, with the flag named
    Case("batch-size-0", labelled("--batch-size", "0"), 2, (r"argument --batch-size: must be >= 1, got 0",)),
    Case("batch-size-negative", labelled("--batch-size", "-1"), 2, (r"--batch-size: must be >= 1, got -1",)),
    Case(
        "batch-size-word", labelled("--batch-size", "many"), 2, (r"--batch-size: expected int, got 'many'",)
    ),
    Case("top-k-0", labelled("--top-k", "0"), 2, (r"--top-k: must be >= 1",)),
    Case(
        "embed-batch-size-0",
        lambda ws, d: ["embed", ws["images"], "--out", d / "e", *ck(ws, d), "--batch-size", "0"],
        2,
        (r"--batch-size: must be >= 1",),
    ),
    Case(
        "embed-shard-size-0",
        lambda ws, d: ["embed", ws["images"], "--out", d / "e", *ck(ws, d), "--shard-size", "0"],
        2,
        (r"--shard-size: must be >= 1",),
    ),
    Case(
        "search-k-0",
        lambda ws, d: ["search", d, "--text", "cat", "-k", "0"],
        2,
        (r"-k/--top-k: must be >= 1",),
    ),
    Case(
        "search-k-negative",
        lambda ws, d: ["search", d, "--text", "cat", "-k", "-3"],
        2,
        (r"must be >= 1, got -3",),
    ),
    Case(
        "index-nprobe-0",
        lambda ws, d: ["index", d, "--out", d / "i", "--nprobe", "0"],
        2,
        (r"--nprobe: must be >= 1",),
    ),
    Case("serve-port-range", lambda ws, d: ["serve", "--port", "70000"], 2, (r"a TCP port is 0\.\.65535",)),
    Case("serve-timeout-0", lambda ws, d: ["serve", "--timeout-s", "0"], 2, (r"--timeout-s: must be > 0",)),
    Case(
        "serve-upload-negative",
        lambda ws, d: ["serve", "--max-upload-mb", "-1"],
        2,
        (r"--max-upload-mb: must be > 0",),
    ),
    Case(
        "serve-upload-nan",
        lambda ws, d: ["serve", "--max-upload-mb", "nan"],
        2,
        (r"--max-upload-mb: must be > 0",),
    ),
    Case(
        "export-atol-0",
        lambda ws, d: ["export-onnx", "--out", d, "--atol", "0"],
        2,
        (r"--atol: must be > 0",),
    ),
    Case(
        "export-eval-limit-negative",
        lambda ws, d: ["export-onnx", "--out", d, "--eval-limit", "-1"],
        2,
        (r"--eval-limit: must be >= 0",),
    ),
    Case(
        "eval-batch-size-0",
        lambda ws, d: ["eval", "zeroshot", "--batch-size", "0"],
        2,
        (r"--batch-size: must be >= 1",),
    ),
    Case("unknown-subcommand", lambda ws, d: ["frobnicate"], 2, ()),
    # class 6: outputs checked before any work
    Case("move-without-move-into", labelled("--move"), 1, (r"--move needs --move-into DIR",)),
    Case(
        "move-into-a-file",
        lambda ws, d: [*labelled()(ws, d), "--move-into", ws["one_image"]],
        1,
        (r"cat0\.jpg: --move-into: is an existing file, not a folder",),
    ),
    Case(
        "output-extension",
        lambda ws, d: [*labelled()(ws, d), "--output", d / "preds.txt"],
        1,
        (r"--output .*preds\.txt: use a file name ending in \.csv or \.json",),
    ),
    Case(
        "output-is-a-folder",
        lambda ws, d: [*labelled()(ws, d), "--output", d],
        1,
        (r"--output: is a folder",),
    ),
    Case(
        "output-under-a-file",
        lambda ws, d: [*labelled()(ws, d), "--output", ws["one_image"] / "p.csv"],
        1,
        (r"cat0\.jpg: --output's folder: is an existing file, not a folder",),
    ),
    Case(
        "missing-input",
        lambda ws, d: ["classify", d / "nothing-here", "--labels", "a,b", *ck(ws, d)],
        1,
        (r"image input '.*nothing-here': no such file, folder or glob match",),
    ),
    Case(
        "glob-matches-nothing",
        lambda ws, d: ["classify", d / "*.png", "--labels", "a,b", *ck(ws, d)],
        1,
        (r"glob '.*\*\.png' matched no image files",),
    ),
    Case(
        "embed-missing-column",
        lambda ws, d: ["embed", d / "t.csv", "--out", d / "e", *ck(ws, d), "--column", "nope"],
        1,
        (r"t\.csv: no column 'nope'; columns are \['file', 'label'\]",),
    ),
    Case(
        "embed-missing-source",
        lambda ws, d: ["embed", d / "gone", "--out", d / "e", *ck(ws, d)],
        1,
        (r"gone: no such folder, table or shard",),
    ),
    Case(
        "embed-texts-from-folder",
        lambda ws, d: ["embed", ws["images"], "--out", d / "e", *ck(ws, d), "--kind", "text"],
        1,
        (r"texts come from a \.csv/\.jsonl/\.txt table",),
    ),
    Case(
        "embed-out-is-a-file",
        lambda ws, d: ["embed", ws["images"], "--out", ws["one_image"], *ck(ws, d)],
        1,
        (r"cat0\.jpg: --out: is an existing file, not a folder",),
    ),
    Case(
        "convert-dst-under-a-file",
        lambda ws, d: ["convert", ws["tiny_pt"], ws["one_image"] / "x.pt", "--to", "openai"],
        1,
        (r"cat0\.jpg: dst's folder: is an existing file, not a folder",),
    ),
    # class 9: nothing usable is an error, not an empty success
    Case(
        "heic-only-folder",
        lambda ws, d: ["classify", ws["heic_only"], "--labels", "a,b", *ck(ws, d)],
        1,
        (r"no image files in .*heic-only \(2 \.heic\); readable types:",),
    ),
    Case(
        "all-images-broken",
        lambda ws, d: ["classify", ws["broken"], "--labels", "a,b", "--quiet", "--no-cache", *ck(ws, d)],
        1,
        (r"none of the 4 images could be used: 4 skipped \(2 unreadable, 2 too_large\)",),
    ),
    Case(
        "embed-all-broken",
        lambda ws, d: ["embed", ws["broken"], "--out", d / "e", "--quiet", *ck(ws, d)],
        1,
        (r"none of the inputs of .*broken could be embedded: 4 skipped", r"skipped\.csv"),
    ),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_refused_with_one_clear_line(case, ws, tmp_path):
    work = fresh_dir(tmp_path)
    (work / "t.csv").write_text("file,label\nimages/cats/cat0.jpg,cat\n")
    rc, _, err = run_cli(case.argv(ws, work))
    assert rc == case.rc, err[-2000:]
    assert "Traceback" not in err
    lines = error_lines(err) if case.patterns else [err]
    assert len(lines) == 1, err[-2000:]
    for pattern in case.patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])


def test_labels_over_255_bytes_are_labels_not_a_path(ws, tmp_path):
    assert len(LABELS_30.encode()) > 255  # longer than a file name may be
    out = fresh_dir(tmp_path) / "p.json"
    rc, _, err = run_cli(
        [*labelled()(ws, tmp_path)[:-2], "--labels", LABELS_30, "--output", out, "--top-k", "30"]
    )
    assert rc == 0, err
    predictions = json.loads(out.read_text())["predictions"]
    assert len(predictions) == 6 and len([k for k in predictions[0] if k.startswith("label")]) == 30


def test_random_weights_only_when_asked_and_said(ws, tmp_path):
    out = fresh_dir(tmp_path) / "p.csv"
    argv = ["classify", ws["images"], "--labels", "cat,dog", "--model", "tiny-vit", "--random-weights", "--quiet",
            "--no-cache", "--output", out]  # fmt: skip
    rc, _, err = run_cli(argv)
    assert (
        rc == 0 and "warning: --random-weights: tiny-vit with random weights; outputs are meaningless" in err
    )
    assert len(list(csv.DictReader(out.open()))) == 6


def test_some_images_broken_run_lists_each_skip_with_its_reason(ws, tmp_path):
    work = fresh_dir(tmp_path)
    out = work / "preds.csv"
    rc, _, err = run_cli(["classify", ws["images"], ws["broken"], "--labels", "cat,dog", "--quiet", "--no-cache",
                          *ck(ws, work), "--output", out])  # fmt: skip
    assert rc == 0, err
    assert len(list(csv.DictReader(out.open()))) == 6
    skipped = {
        row["path"].rsplit("/", 1)[1]: row for row in csv.DictReader((work / "preds.skipped.csv").open())
    }
    assert {name: row["reason"] for name, row in skipped.items()} == {
        "empty.png": "unreadable", "not-a-jpeg.jpg": "unreadable", "thin.png": "too_large", "strip.png": "too_large",
    }  # fmt: skip
    assert "aspect ratio 300000:1 above the limit 40:1" in skipped["thin.png"]["error"]
    assert "1x40000000" in skipped["strip.png"]["error"]
    assert "classified 6 of 10 images; 4 skipped (2 unreadable, 2 too_large)" in err


def test_embed_skip_list_and_per_item_progress(ws, tmp_path):
    work = fresh_dir(tmp_path)
    table = work / "t.csv"
    cat = ws["one_image"]
    table.write_text(f"path,label\n{cat},cat\n,empty\n{work / 'gone.jpg'},gone\n{ws['thin_png']},thin\n")
    rc, _, err = run_cli(["embed", table, "--out", work / "e", *ck(ws, work), "--shard-size", "2"])
    assert rc == 0, err
    assert re.search(r"\b4/4\b", err)  # the bar counts rows, not shards
    rows = list(csv.DictReader((work / "e" / "skipped.csv").open()))
    assert [(r["reason"], r["error"].split(": ")[-1]) for r in rows][:1] == [("missing", "empty 'path'")]
    assert [r["reason"] for r in rows] == ["missing", "missing", "too_large"]
    assert rows[0]["error"].startswith(f"{table}:3:")  # file and line of the empty cell
    assert "wrote 2 shards (1 rows), 0 already finished, 3 inputs skipped" in run_cli_stdout(ws, work, table)


def run_cli_stdout(ws, work, table) -> str:
    rc, out, _ = run_cli(
        ["embed", table, "--out", work / "e", *ck(ws, work), "--shard-size", "2", "--overwrite"]
    )
    assert rc == 0
    return out


# ---- the error policy itself -------------------------------------------------------------------------


def _fake_command(monkeypatch, error: BaseException) -> None:
    def main(argv):
        raise error

    monkeypatch.setattr("clipforge.commands.models.main", main)


def test_a_bug_shows_its_traceback_and_exit_70(monkeypatch):
    _fake_command(monkeypatch, TypeError("unsupported operand"))
    rc, _, err = run_cli(["models"])
    assert rc == 70 and "Traceback (most recent call last)" in err
    assert "clipforge models: internal error (TypeError): this is a bug in clipforge" in err


def test_a_dependency_value_error_is_a_bug_not_a_user_error(monkeypatch):
    import numpy as np

    def main(argv):
        np.zeros(3).reshape(2, 2)

    monkeypatch.setattr("clipforge.commands.models.main", main)
    rc, _, err = run_cli(["models"])
    assert rc == 70 and "internal error (ValueError)" in err and "Traceback" in err


def test_a_bare_key_error_is_a_bug(monkeypatch):
    _fake_command(monkeypatch, KeyError("text_projection"))
    rc, _, err = run_cli(["models"])
    assert rc == 70 and "internal error (KeyError)" in err


def test_os_errors_are_one_line_naming_the_path(monkeypatch):
    _fake_command(monkeypatch, PermissionError(13, "Permission denied", "/data/out.csv"))
    rc, _, err = run_cli(["models"])
    assert (rc, err) == (1, "clipforge models: error: /data/out.csv: Permission denied\n")


def test_missing_extra_says_how_to_install(monkeypatch):
    from clipforge.extras import require

    monkeypatch.setattr(
        "clipforge.commands.models.main", lambda argv: require("not_a_module_xyz", "the thing")
    )
    rc, _, err = run_cli(["models"])
    assert (
        rc == 1
        and "the thing needs not_a_module_xyz, which is not installed: pip install not_a_module_xyz" in err
    )


def test_tracebacks_on_request(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_TRACEBACK", "1")
    rc, _, err = run_cli(["classify", ws["images"], "--labels", "cat"])
    assert rc == 1 and "Traceback" in err and "one label" in error_lines(err)[0]


def test_interrupt_is_130_without_traceback(monkeypatch):
    _fake_command(monkeypatch, KeyboardInterrupt())
    rc, _, err = run_cli(["models"])
    assert (rc, err) == (130, "clipforge models: interrupted\n")


def test_undecodable_file_names_survive_outputs_and_printing(ws, tmp_path):
    import os
    import subprocess
    import sys

    from fault_helpers import REPO

    work = fresh_dir(tmp_path)
    name = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name on a UTF-8 system: not decodable
    (work / name).write_bytes(ws["one_image"].read_bytes())
    out = work / os.fsdecode(b"pr\xe9ds.csv")
    argv = ["classify", work, "--labels", "cat,dog", "--no-cache", *ck(ws, work), "--output", out]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "clipforge.cli", *map(str, argv)], capture_output=True, env=env
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert b"caf\xe9.jpg" in out.read_bytes()  # the file system's own bytes, so the path still opens
    assert b"caf\\udce9.jpg" in done.stdout  # printed escaped, not a UnicodeEncodeError
