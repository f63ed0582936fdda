"""Fault corpus, part 3 (issue #15 classes 1, 4, 8): outputs appear only when complete, OS errors (a read-only
folder, a full disk, a file where a folder should be) are one line naming the path with exit status 1, and a
rerun into an output folder continues only the same job.

A full disk is produced for real, portably: the commands run in a child process whose file-size limit
(RLIMIT_FSIZE) makes the kernel refuse writes past N bytes (EFBIG), part-way through a file, exactly where a
full disk refuses them (ENOSPC) -- the same failure path, without needing root to mount a small tmpfs. A
read-only folder is read-only for real too: the child runs as user nobody when the tests run as root."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_helpers import error_lines, run_cli, run_isolated, temp_leftovers, workspace

pytest.importorskip("faiss")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


def embed(ws, out, *extra, model="tiny_pt", source=None):
    return run_cli(["embed", source or ws["images"], "--out", out, "--checkpoint", ws[model], "--quiet",
                    "--metadata", "jsonl", *extra])  # fmt: skip


@pytest.fixture(scope="module")
def built(ws, tmp_path_factory):
    """An embedding folder (3 shards of 2) and its index, made with the tiny checkpoint."""
    root = tmp_path_factory.mktemp("built")
    assert embed(ws, root / "emb", "--shard-size", "2")[0] == 0
    assert run_cli(["index", root / "emb", "--out", root / "idx", "--quiet"])[0] == 0
    return root


def copy_of(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def one_error(err: str) -> str:
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# ---- class 1: outputs appear only when complete ---------------------------------------------------------


def test_export_uses_the_models_own_context_and_checks_it(ws, tmp_path):
    from clipforge.apps.onnx_export import OnnxCLIP

    out = tmp_path / "onnx"
    rc, _, err = run_cli(["export-onnx", "--checkpoint", ws["short_st"], "--out", out])
    assert rc == 0, err
    info = json.loads((out / "onnx.json").read_text())
    assert info["context_length"] == 16 and max(info["max_abs_diff"].values()) <= 1e-4
    runtime = OnnxCLIP(out / "image.onnx", out / "text.onnx")
    assert runtime.text.get_inputs()[0].shape[1] == "length"  # dynamic, up to the recorded context of 16
    assert runtime.encode_text(np.zeros((2, 16), np.int64)).shape == (2, 64)
    assert not temp_leftovers(out)


def test_export_that_fails_its_check_writes_nothing(ws, tmp_path):
    out = tmp_path / "onnx"
    rc, _, err = run_cli(["export-onnx", "--checkpoint", ws["tiny_pt"], "--out", out, "--atol", "1e-15"])
    assert rc == 1 and re.search(
        r"onnxruntime differs from PyTorch by .* above atol 1e-15; nothing written", one_error(err)
    )
    assert sorted(p.name for p in out.iterdir()) == []  # no image.onnx / text.onnx / onnx.json, no temp files


def test_export_into_another_models_export_is_refused_then_replaced(ws, tmp_path):
    out = tmp_path / "onnx"
    assert run_cli(["export-onnx", "--checkpoint", ws["tiny_pt"], "--out", out])[0] == 0
    (out / "image.int8.onnx").write_bytes(b"stale")  # an int8 tower of the old export
    rc, _, err = run_cli(["export-onnx", "--checkpoint", ws["other_pt"], "--out", out])
    assert rc == 1 and "holds the ONNX export of another model" in one_error(err)
    rc, _, err = run_cli(["export-onnx", "--checkpoint", ws["other_pt"], "--out", out, "--overwrite"])
    assert rc == 0, err
    from clipforge.apps.provenance import weights_id
    from clipforge.checkpoints import load_any

    assert json.loads((out / "onnx.json").read_text())["weights"] == weights_id(load_any(ws["other_pt"]))
    assert not (out / "image.int8.onnx").exists()  # it no longer matched the fp32 towers


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from clipforge.fileio import atomic_write

    target = tmp_path / "result.json"
    target.write_text("old")

    def half_then_crash(f):
        f.write(b'{"half": ')
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="writer crashed"):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old" and not temp_leftovers(tmp_path)


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    from clipforge.fileio import StagedFiles

    with pytest.raises(ValueError, match="check failed"), StagedFiles() as staged:
        staged.path(tmp_path / "a.onnx").write_bytes(b"a")
        staged.path(tmp_path / "b.onnx").write_bytes(b"b")
        raise ValueError("check failed")
    assert list(tmp_path.iterdir()) == []
    with StagedFiles() as staged:
        staged.path(tmp_path / "a.onnx").write_bytes(b"a")
        staged.path(tmp_path / "b.json").write_bytes(b"{}")
        assert staged.commit() == [tmp_path / "a.onnx", tmp_path / "b.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.json"]


def test_a_writer_that_writes_nothing_is_an_error_naming_the_file(tmp_path):
    from clipforge.fileio import atomic_path

    with (
        pytest.raises(FileNotFoundError, match="the writer produced no file"),
        atomic_path(tmp_path / "x.faiss"),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


# ---- class 4: a read-only folder, for real (as user nobody when root) ---------------------------------------


@pytest.fixture(scope="module")
def readonly(ws):
    """(cases, results): each command writes into a 0555 folder; one child process runs them all."""
    base = Path(tempfile.mkdtemp(prefix="clipforge-ro-", dir="/tmp"))
    os.chmod(base, 0o755)
    ro = base / "ro"
    ro.mkdir(mode=0o555)
    os.chmod(ro, 0o555)
    (base / "q.txt").write_text("cat\n")
    (base / "pairs.csv").write_text("path,caption\na.jpg,a cat on a mat\n")
    ck = str(ws["tiny_pt"])
    cases = {
        "classify-output": (["classify", "x.jpg", "--labels", "a,b", "--checkpoint", ck, "--output", ro / "p.csv"],
                            rf"{ro}: --output's folder: not writable"),
        "classify-move-into": (["classify", "x.jpg", "--labels", "a,b", "--checkpoint", ck, "--move-into", ro / "s"],
                               rf"{ro}/s: --move-into: cannot be created, {ro} is not writable"),
        "embed-new-folder": (["embed", "x", "--out", ro / "e", "--checkpoint", ck], rf"{ro}/e: --out: cannot be created"),
        "embed-existing-folder": (["embed", "x", "--out", ro, "--checkpoint", ck], rf"{ro}: --out: not writable"),
        "index": (["index", "emb", "--out", ro / "i"], rf"{ro}/i: --out: cannot be created, {ro} is not writable"),
        "export-onnx": (["export-onnx", "--checkpoint", ck, "--out", ro / "o"], rf"{ro}/o: --out: cannot be created"),
        "convert-file": (["convert", ck, ro / "x.pt", "--to", "clipforge"], rf"{ro}: dst's folder: not writable"),
        "convert-hf": (["convert", ck, ro / "hf", "--to", "hf"], rf"{ro}/hf: dst: cannot be created"),
        "train": (["train", "--smoke", f"output_dir={ro / 't'}"], rf"{ro}/t: .*(Permission denied|not writable)"),
        "curate": (["curate", "--input", base / "pairs.csv", "--queries", base / "q.txt", "--out", ro / "c"],
                   rf"{ro}/c: --out: cannot be created, {ro} is not writable"),
    }  # fmt: skip
    results = run_isolated([{"argv": argv} for argv, _ in cases.values()], unprivileged=True)
    yield dict(
        zip(cases, [(pattern, result) for (_, pattern), result in zip(cases.values(), results, strict=True)])
    )
    os.chmod(ro, 0o755)
    shutil.rmtree(base, ignore_errors=True)


READONLY_CASES = ["classify-output", "classify-move-into", "embed-new-folder", "embed-existing-folder", "index",
                  "export-onnx", "convert-file", "convert-hf", "train", "curate"]  # fmt: skip


@pytest.mark.parametrize("name", READONLY_CASES)
def test_read_only_output_is_one_line_naming_the_folder(readonly, name):
    pattern, result = readonly[name]
    assert result["rc"] == 1, result["stderr"][-3000:]
    assert re.search(pattern, one_error(result["stderr"])), (pattern, result["stderr"][-500:])


# ---- class 4: a full disk, for real (the kernel refuses writes past a size limit) ---------------------------


def _valid(path: Path) -> bool:
    """A file under a final name must be complete: it parses / loads as what its name says."""
    suffix = path.suffix
    if suffix in (".json",):
        json.loads(path.read_text())
    elif suffix == ".jsonl":
        [json.loads(line) for line in path.read_text().splitlines() if line]
    elif suffix == ".npy":
        np.load(path)
    elif suffix in (".pt",):
        torch.load(path, weights_only=True)
    elif suffix == ".safetensors":
        from clipforge.checkpoints.io import validate_safetensors

        validate_safetensors(path)
    elif suffix == ".onnx":
        import onnx

        onnx.load(str(path))
    elif suffix == ".faiss":
        import faiss

        faiss.read_index(str(path))
    elif suffix == ".jpg":
        from PIL import Image

        Image.open(path).load()
    return True


@pytest.fixture(scope="module")
def full_disk(ws, built, tmp_path_factory):
    root = tmp_path_factory.mktemp("full-disk")
    ck = ws["tiny_pt"]
    pairs = root / "pairs.csv"
    pairs.write_text("path,caption\n" + "".join(f"{p},a photo of a {p.parent.name[:-1]}\n"
                                                for p in sorted(ws["images"].rglob("*.jpg"))))  # fmt: skip
    (root / "q.txt").write_text("cat\ndog\n")
    cases = {
        "classify-output": (["classify", ws["images"], "--labels", "cat,dog", "--checkpoint", ck, "--no-cache",
                             "--quiet", "--output", root / "c" / "p.json"], 300, root / "c"),
        "classify-move-into": (["classify", ws["images"], "--labels", "cat,dog", "--checkpoint", ck, "--no-cache",
                                "--quiet", "--move-into", root / "m"], 1500, root / "m"),
        "embed-record": (["embed", ws["images"], "--out", root / "e1", "--checkpoint", ck, "--quiet"], 400, root / "e1"),
        "embed-shard": (["embed", ws["images"], "--out", root / "e2", "--checkpoint", ck, "--quiet", "--dtype",
                         "float32", "--shard-size", "6", "--metadata", "jsonl"], 1200, root / "e2"),
        "index": (["index", built / "emb", "--out", root / "i", "--quiet"], 1000, root / "i"),
        "index-thumbnails": (["index", built / "emb", "--out", root / "t", "--quiet"], 1900, root / "t"),
        "export-onnx": (["export-onnx", "--checkpoint", ck, "--out", root / "o"], 1_000_000, root / "o"),
        "convert-clipforge": (["convert", ck, root / "v" / "x.safetensors", "--to", "clipforge"], 1_000_000, root / "v"),
        "convert-openai": (["convert", ck, root / "w" / "x.pt", "--to", "openai"], 1_000_000, root / "w"),
        "convert-hf": (["convert", ck, root / "h", "--to", "hf"], 1_000_000, root / "h"),
        "train": (["train", "--smoke", f"output_dir={root / 'tr'}"], 200_000, root / "tr"),
        "curate": (["curate", "--input", pairs, "--queries", root / "q.txt", "--out", root / "cu", "--min-image-side",
                    "1", "--workers", "1"], 1000, root / "cu"),
    }  # fmt: skip
    results = run_isolated([{"argv": argv, "fsize": limit} for argv, limit, _ in cases.values()])
    return {
        name: (folder, result) for (name, (_, _, folder)), result in zip(cases.items(), results, strict=True)
    }


FULL_DISK_CASES = ["classify-output", "classify-move-into", "embed-record", "embed-shard", "index",
                   "index-thumbnails", "export-onnx", "convert-clipforge", "convert-openai", "convert-hf", "train", "curate"]  # fmt: skip


@pytest.mark.parametrize("name", FULL_DISK_CASES)
def test_full_disk_is_one_line_and_leaves_no_torn_file(full_disk, name):
    folder, result = full_disk[name]
    assert result["rc"] == 1, result["stderr"][-3000:]
    line = one_error(result["stderr"])
    assert re.search(rf"{re.escape(str(folder))}/?\S*: .*File too large", line), line
    assert not temp_leftovers(folder)
    finals = [
        p for p in folder.rglob("*") if p.is_file() and p.name != "metrics.jsonl"
    ]  # train's log appends
    assert all(_valid(p) for p in finals)


def test_a_curated_shard_that_fails_mid_file_names_the_shard_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import tarfile

    from clipforge.curate.writer import ShardWriter

    writer = ShardWriter(tmp_path, samples_per_shard=3)
    writer.write("k0", b"\xff\xd8jpeg", "a cat", {})
    real_addfile, calls = tarfile.TarFile.addfile, []

    def addfile(self, info, fileobj=None):
        calls.append(info.name)
        if len(calls) == 2:  # the second sample's caption: the disk is full mid-shard
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_addfile(self, info, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", addfile)
    with pytest.raises(OSError, match=r"cannot write: No space left on device") as error:
        writer.write("k1", b"\xff\xd8jpeg", "a dog", {})
    assert error.value.filename == str(tmp_path / "curated-000000.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no .tar, no .tar.tmp


# ---- class 4: a file where a folder should be --------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "pattern"),
    [
        (["index", "{emb}", "--out", "{file}"], r"notes\.txt: --out: is an existing file, not a folder"),
        (
            ["export-onnx", "--checkpoint", "{ck}", "--out", "{file}"],
            r"notes\.txt: --out: is an existing file",
        ),
        (["convert", "{ck}", "{file}", "--to", "hf"], r"notes\.txt: dst: is an existing file, not a folder"),
        (["train", "--smoke", "output_dir={file}"], r"notes\.txt: is an existing file, not a folder"),
        (
            ["curate", "--input", "{table}", "--queries", "{queries}", "--out", "{file}"],
            r"notes\.txt: --out: is an existing file, not a folder",
        ),
    ],
    ids=["index", "export-onnx", "convert-hf", "train", "curate"],
)
def test_a_file_where_a_folder_should_be(ws, built, tmp_path, command, pattern):
    note = tmp_path / "notes.txt"
    note.write_text("not a folder\n")
    (tmp_path / "q.txt").write_text("cat\n")
    (tmp_path / "pairs.csv").write_text("path,caption\na.jpg,a cat on a mat\n")
    values = {"emb": built / "emb", "file": note, "ck": ws["tiny_pt"], "table": tmp_path / "pairs.csv",
              "queries": tmp_path / "q.txt"}  # fmt: skip
    rc, _, err = run_cli([part.format(**values) for part in command])
    assert rc == 1 and re.search(pattern, one_error(err))
    assert note.read_text() == "not a folder\n"


# ---- class 8: reruns into the same output --------------------------------------------------------------


def test_rerun_of_the_same_job_resumes(ws, built, tmp_path):
    emb = copy_of(built / "emb", tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in emb.glob("emb-*.npy")}
    rc, out, err = run_cli(["embed", ws["images"], "--out", emb, "--checkpoint", ws["tiny_pt"], "--metadata",
                            "jsonl", "--shard-size", "2"])  # fmt: skip
    assert rc == 0 and "wrote 0 shards (0 rows), 3 already finished" in out, err
    assert {p.name: p.stat().st_mtime_ns for p in emb.glob("emb-*.npy")} == before


@pytest.mark.parametrize(
    ("extra", "model", "differs"),
    [
        (["--shard-size", "3"], "tiny_pt", r"shard_size: 2 then, 3 now"),
        (["--shard-size", "2", "--dtype", "float32"], "tiny_pt", r"dtype: 'float16' then, 'float32' now"),
        (["--shard-size", "2"], "other_pt", r"weights: '[0-9a-f]{32}' then, '[0-9a-f]{32}' now"),
    ],
    ids=["shard-size", "dtype", "model"],
)
def test_rerun_with_other_settings_is_refused_then_starts_clean(ws, built, tmp_path, extra, model, differs):
    from clipforge.apps.embed import load_embeddings
    from clipforge.apps.provenance import weights_id
    from clipforge.checkpoints import load_any

    emb = copy_of(built / "emb", tmp_path)
    rc, _, err = embed(ws, emb, *extra, model=model)
    assert rc == 1 and re.search(rf"holds embeddings of another job \(.*{differs}", one_error(err))
    rc, _, err = embed(ws, emb, *extra, "--overwrite", model=model)
    assert rc == 0, err
    vectors, meta = load_embeddings(emb)
    assert len(vectors) == len(meta) == 6  # not 12: the old shards went
    info = json.loads((emb / "embeddings.json").read_text())
    assert info["weights"] == weights_id(load_any(ws[model])) and info["dim"] == 64


def test_rerun_after_the_inputs_changed_is_refused(ws, built, tmp_path):
    images = copy_of(ws["images"], tmp_path)
    emb = tmp_path / "emb"
    assert embed(ws, emb, source=images)[0] == 0
    shutil.copy(images / "cats" / "cat0.jpg", images / "cats" / "cat9.jpg")
    rc, _, err = embed(ws, emb, source=images)
    assert rc == 1 and re.search(r"inputs: '[0-9a-f]+' then, '[0-9a-f]+' now", one_error(err))


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_rerun_redoes_only_a_lost_or_damaged_shard(ws, built, tmp_path, damage):
    emb = copy_of(built / "emb", tmp_path)
    expected = np.load(emb / "emb-00001.npy")
    if damage == "deleted":
        (emb / "emb-00001.npy").unlink()
    else:
        (emb / "emb-00001.npy").write_bytes((emb / "emb-00001.npy").read_bytes()[:100])
    rc, out, err = embed(ws, emb, "--shard-size", "2")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(emb / "emb-00001.npy"), expected)
    rc, out, _ = run_cli(["embed", ws["images"], "--out", emb, "--checkpoint", ws["tiny_pt"], "--metadata", "jsonl",
                          "--shard-size", "2"])  # fmt: skip
    assert "3 already finished" in out


@pytest.mark.parametrize("state", ["stray-shards", "corrupt-record"])
def test_a_folder_of_unknown_shards_is_refused(ws, built, tmp_path, state):
    emb = copy_of(built / "emb", tmp_path)
    if state == "stray-shards":
        (emb / "embeddings.json").unlink()
    else:
        (emb / "embeddings.json").write_text("{not json")
    rc, _, err = embed(ws, emb, "--shard-size", "2")
    assert rc == 1 and re.search(
        r"(without an embeddings\.json|holds embeddings of another job)", one_error(err)
    )


def test_index_of_an_unfinished_embedding_is_refused(built, tmp_path):
    emb = copy_of(built / "emb", tmp_path)
    (emb / "emb-00002.npy").unlink()
    rc, _, err = run_cli(["index", emb, "--out", tmp_path / "idx"])
    assert (
        rc == 1
        and "the embedding run is not finished: 1 of 3 shards missing (emb-00002.npy)" in one_error(err)
    )


def test_index_over_another_index_is_refused_then_replaced(ws, built, tmp_path):
    idx = copy_of(built / "idx", tmp_path)
    text = tmp_path / "t.txt"
    text.write_text("a cat\na dog\n")
    emb = tmp_path / "temb"
    assert embed(ws, emb, "--kind", "text", source=text)[0] == 0
    rc, _, err = run_cli(["index", emb, "--out", idx])
    assert rc == 1 and "holds an index of other embeddings" in one_error(err)
    rc, _, err = run_cli(["index", emb, "--out", idx, "--overwrite", "--quiet"])
    assert rc == 0 and json.loads((idx / "index.json").read_text())["count"] == 2
    assert not list((idx / "thumbs").glob("*.jpg"))  # the old images' thumbnails went with the old index


def test_index_rebuilt_in_place_reuses_its_thumbnails(built, tmp_path):
    idx = copy_of(built / "idx", tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in (idx / "thumbs").iterdir()}
    assert run_cli(["index", built / "emb", "--out", idx, "--quiet"])[0] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (idx / "thumbs").iterdir()} == before and len(before) == 6


def test_search_uses_the_model_recorded_in_the_index(ws, built):
    rc, out, err = run_cli(["search", built / "idx", "--image", ws["one_image"], "-k", "2", "--json"])
    assert rc == 0, err
    hits = json.loads(out)
    assert hits[0]["metadata"]["path"] == "cats/cat0.jpg" and hits[0]["score"] == pytest.approx(1.0, abs=2e-3)


def _edit_index(built, tmp_path, change) -> Path:
    idx = copy_of(built / "idx", tmp_path)
    info = json.loads((idx / "index.json").read_text())
    change(info)
    (idx / "index.json").write_text(json.dumps(info))
    return idx


@pytest.mark.parametrize(
    ("setup", "argv", "pattern"),
    [
        ("as-is", ["--checkpoint", "{other}"], r"was embedded with checkpoint .*tiny\.pt .*the model given has other weights"),
        ("legacy", [], r"does not record a loadable model; give --checkpoint"),
        ("moved", [], r"was made with .*gone\.pt, which no longer exists"),
        ("random", [], r"was made with tiny-vit with random weights, which cannot be loaded again"),
        ("as-is", ["--text", "  "], r"--text: the query is empty"),
        ("bad-faiss", [], r"index\.faiss: unreadable faiss index"),
        ("short-metadata", [], r"metadata\.jsonl has 5 rows for 6 vectors"),
        ("no-record", [], r"not a finished index folder \(no index\.faiss / index\.json"),
    ],
    ids=["other-model", "legacy-index", "checkpoint-gone", "random-weights", "empty-text", "corrupt-faiss",
         "metadata-mismatch", "not-an-index"],
)  # fmt: skip
def test_search_refuses_what_would_give_meaningless_hits(ws, built, tmp_path, setup, argv, pattern):
    edits = {
        "legacy": lambda i: [i.pop("model"), i.pop("weights")],
        "moved": lambda i: i.update(model={"checkpoint": str(tmp_path / "gone.pt")}),
        "random": lambda i: i.update(model={"name": "tiny-vit", "random_weights": True}),
    }
    idx = _edit_index(built, tmp_path, edits.get(setup, lambda i: None))
    if setup == "bad-faiss":
        (idx / "index.faiss").write_bytes(b"garbage")
    if setup == "short-metadata":
        (idx / "metadata.jsonl").write_text(
            "".join((idx / "metadata.jsonl").read_text().splitlines(True)[:5])
        )
    if setup == "no-record":
        (idx / "index.json").unlink()
    query = [] if "--text" in argv else ["--text", "a cat"]
    rc, _, err = run_cli(["search", idx, *query, *[a.format(other=ws["other_pt"]) for a in argv]])
    assert rc == 1 and re.search(pattern, one_error(err)), err[-2000:]


def test_serve_refuses_an_index_of_another_model_before_starting(ws, built):
    rc, _, err = run_cli(["serve", "--index", built / "idx", "--checkpoint", ws["other_pt"], "--port", "0"])
    assert rc == 1 and "the model given has other weights" in one_error(err)
