"""Fault corpus, part 2 (issue #15 class 7): every malformed checkpoint file or folder is refused at load time
with its path and what is wrong -- through `clipforge info` and through a command that loads the model
(`classify --checkpoint`). Files are made at test time from a tiny saved model."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fault_helpers import error_lines, fresh_dir, run_cli, workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


def _safetensors_parts(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def _safetensors_bytes(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _largest(header: dict) -> str:
    return max(
        (k for k in header if k != "__metadata__"),
        key=lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0],
    )


def header_lies(ws, d):
    header, body = _safetensors_parts(ws["tiny_st"])
    name = _largest(header)
    header[name]["shape"] = [header[name]["shape"][0] * 2, *header[name]["shape"][1:]]
    (d / "lies.safetensors").write_bytes(_safetensors_bytes(header, body))
    return d / "lies.safetensors"


def header_gap(ws, d):
    header, body = _safetensors_parts(ws["tiny_st"])
    name = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])[1]
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + 4, end + 4]
    (d / "gap.safetensors").write_bytes(_safetensors_bytes(header, body))
    return d / "gap.safetensors"


def cut(source_key: str, fraction: float, name: str):
    def build(ws, d):
        data = ws[source_key].read_bytes()
        (d / name).write_bytes(data[: int(len(data) * fraction)] if fraction >= 0.01 else data[:50])
        return d / name

    return build


def written(name: str, data: bytes):
    def build(ws, d):
        (d / name).write_bytes(data)
        return d / name

    return build


def tiny_state(ws) -> dict:
    return torch.load(ws["tiny_pt"], weights_only=True)


def edited_clipforge(name: str, edit: Callable[[dict], None]):
    def build(ws, d):
        payload = tiny_state(ws)
        edit(payload)
        torch.save(payload, d / name)
        return d / name

    return build


def openai_layout(name: str, edit: Callable[[dict], None]):
    def build(ws, d):
        from clipforge.checkpoints.openai import clipforge_to_openai

        state = clipforge_to_openai(tiny_state(ws)["state_dict"])
        edit(state)
        torch.save(state, d / name)
        return d / name

    return build


def hf_folder(edit: Callable[[Path], None]):
    def build(ws, d):
        from clipforge.checkpoints import load_any, save

        folder = d / "hf"
        save(load_any(ws["tiny_pt"]), folder, "hf")
        edit(folder)
        return folder

    return build


def _edit_hf_config(change: Callable[[dict], None]):
    def edit(folder: Path):
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))

    return edit


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/clipforge-fault-pwned",))


def unsafe_pickle(ws, d):
    with open(d / "evil.pt", "wb") as f:
        pickle.dump({"x": _RunsCode()}, f, protocol=2)
    return d / "evil.pt"


def _cut_in_data(path: Path) -> None:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    path.write_bytes(data[: 8 + length + 100])  # the header survives, the tensors do not


def _set_nan(payload):
    payload["state_dict"]["visual.proj"][0, 0] = float("nan")


@dataclass(frozen=True)
class Bad:
    id: str
    build: Callable
    patterns: tuple[str, ...]


BAD_FILES = [
    Bad("zero-byte-pt", written("zero.pt", b""), (r"zero\.pt: the file is empty \(0 bytes\)",)),
    Bad(
        "zero-byte-safetensors", written("zero.safetensors", b""), (r"zero\.safetensors: the file is empty",)
    ),
    Bad(
        "truncated-safetensors-data",
        cut("tiny_st", 0.6, "cut.safetensors"),
        (
            r"cut\.safetensors: tensor '.*' ends at byte [\d,]+ but the file holds [\d,]+ bytes of tensor data: truncated",
        ),
    ),
    Bad(
        "truncated-safetensors-header",
        cut("tiny_st", 0.0, "head.safetensors"),
        (r"head\.safetensors: safetensors header says it is [\d,]+ bytes, but the file has 42 after it",),
    ),
    Bad(
        "header-lies-about-shape",
        header_lies,
        (r"lies\.safetensors: tensor '.*': shape .* needs [\d,]+ bytes, the header gives",),
    ),
    Bad(
        "header-has-a-gap",
        header_gap,
        (r"gap\.safetensors: tensor '.*' starts at byte [\d,]+, expected [\d,]+ \(gap or overlap\)",),
    ),
    Bad(
        "header-not-json",
        written("junk.safetensors", struct.pack("<Q", 12) + b"{not json!!}" + b"\0" * 8),
        (r"junk\.safetensors: safetensors header is not valid JSON",),
    ),
    Bad(
        "header-unknown-dtype",
        written(
            "dtype.safetensors",
            _safetensors_bytes({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
        ),
        (r"tensor 'w': unknown dtype 'Q7'",),
    ),
    Bad(
        "text-only-safetensors",
        written("notes.safetensors", b"these are not the weights you are looking for\n"),
        (r"notes\.safetensors: is a text file, not a checkpoint \(it starts 'these are not",),
    ),
    Bad(
        "text-only-pt",
        written("notes.pt", b"hello world\n"),
        (r"notes\.pt: is a text file, not a checkpoint",),
    ),
    Bad(
        "html-error-page",
        written("model.pt", b"<!DOCTYPE html><html><body>404</body></html>"),
        (r"model\.pt: is a text file",),
    ),
    Bad(
        "git-lfs-pointer",
        written("lfs.safetensors", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n"),
        (r"lfs\.safetensors: is a Git LFS pointer, not the weights \(run `git lfs pull`\)",),
    ),
    Bad(
        "truncated-zip-pt",
        cut("tiny_pt", 0.5, "cut.pt"),
        (r"cut\.pt: truncated or damaged: a zip archive \(torch\.save\) whose end is missing",),
    ),
    Bad(
        "random-bytes",
        written("noise.bin", bytes(range(7, 250, 3)) * 4),
        (r"noise\.bin: not a checkpoint: unknown format \(first bytes 07 0a 0d",),
    ),
    Bad(
        "unsafe-pickle",
        unsafe_pickle,
        (r"evil\.pt: refusing to load: the pickle references objects beyond tensors",),
    ),
    Bad(
        "unknown-config-field",
        edited_clipforge("field.pt", lambda p: p["config"].update(colour="blue")),
        (r"field\.pt: bad clipforge config: unknown CLIPConfig field\(s\): \['colour'\]",),
    ),
    Bad(
        "zero-heads",
        edited_clipforge("heads.pt", lambda p: p["config"]["text"].update(heads=0)),
        (r"heads\.pt: config field text\.heads = 0; it must be a whole number >= 1",),
    ),
    Bad(
        "config-not-a-dict",
        edited_clipforge("cfg.pt", lambda p: p.update(config="ViT-B-32")),
        (r"cfg\.pt: its 'config' is a str, not a mapping of config fields",),
    ),
    Bad(
        "nan-weight",
        edited_clipforge("nan.pt", _set_nan),
        (r"nan\.pt: tensor 'visual\.proj' holds 1 NaN/infinite values",),
    ),
    Bad(
        "wrong-shape",
        edited_clipforge("shape.pt", lambda p: p["state_dict"].update({"visual.proj": torch.zeros(3, 3)})),
        (r"shape\.pt: tensor 'visual\.proj' has shape \(3, 3\), the config needs \(64, 64\)",),
    ),
    Bad(
        "missing-tensor",
        edited_clipforge("missing.pt", lambda p: p["state_dict"].pop("text.ln_final.weight")),
        (r"missing\.pt: state_dict does not match .* missing \['text\.ln_final\.weight'\] \(1\)",),
    ),
    Bad(
        "open-clip-small-vocabulary",
        openai_layout(
            "vocab.pt",
            lambda s: s.update({"token_embedding.weight": s["token_embedding.weight"][:1000].clone()}),
        ),
        (
            r"vocab\.pt: the text vocabulary has 1000 rows, but clipforge's BPE tokenizer emits ids up to 49407",
        ),
    ),
    Bad(
        "open-clip-missing-key",
        openai_layout("partial.pt", lambda s: s.pop("ln_final.weight")),
        (r"partial\.pt: lacks tensor 'ln_final\.weight' \(an incomplete CLIP state_dict\)",),
    ),
    Bad(
        "list-not-state-dict",
        lambda ws, d: (torch.save([torch.zeros(2)], d / "list.pt"), d / "list.pt")[1],
        (r"list\.pt: holds a list, not a state_dict or checkpoint",),
    ),
    Bad(
        "hf-config-truncated",
        hf_folder(lambda f: (f / "config.json").write_text((f / "config.json").read_text()[:60])),
        (r"hf/config\.json:\d+:\d+: HF config is not valid JSON",),
    ),
    Bad(
        "hf-config-empty",
        hf_folder(lambda f: (f / "config.json").write_text("")),
        (r"config\.json:1:1: HF config is not valid JSON .* the file is empty",),
    ),
    Bad(
        "hf-config-not-utf8",
        hf_folder(lambda f: (f / "config.json").write_bytes(b'{"model_type": "clip\xff"}')),
        (r"config\.json:1: HF config is not UTF-8 \(byte 0xff at offset 20\)",),
    ),
    Bad(
        "hf-config-missing-field",
        hf_folder(_edit_hf_config(lambda c: c["vision_config"].pop("patch_size"))),
        (r"config\.json: lacks field 'patch_size'",),
    ),
    Bad(
        "hf-config-wrong-type",
        hf_folder(_edit_hf_config(lambda c: c["vision_config"].update(hidden_size="wide"))),
        (r"config\.json: a field has the wrong type or value",),
    ),
    Bad(
        "hf-config-disagrees-with-weights",
        hf_folder(_edit_hf_config(lambda c: c["text_config"].update(num_hidden_layers=3))),
        (r"model\.safetensors: state_dict does not match .* missing \['text\.transformer\.blocks\.2\.",),
    ),
    Bad(
        "hf-weights-truncated",
        hf_folder(lambda f: _cut_in_data(f / "model.safetensors")),
        (r"hf/model\.safetensors: tensor '.*' ends at byte .* truncated",),
    ),
    Bad(
        "hf-weights-missing",
        hf_folder(lambda f: (f / "model.safetensors").unlink()),
        (r"hf: no model\.safetensors or pytorch_model\.bin",),
    ),
    Bad(
        "hf-weights-text",
        hf_folder(lambda f: (f / "model.safetensors").write_text("oops\n")),
        (r"model\.safetensors: is a text file",),
    ),
    Bad(
        "folder-not-hf",
        hf_folder(_edit_hf_config(lambda c: c.update(model_type="bert"))),
        (r"hf: a directory but not an HF CLIP model",),
    ),
]


def _surface(kind: str, ws, path: Path) -> list:
    if kind == "info":
        return ["info", path]
    return ["classify", ws["images"], "--labels", "cat,dog", "--quiet", "--no-cache", "--checkpoint", path]


@pytest.mark.parametrize("surface", ["info", "classify"])
@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda b: b.id)
def test_malformed_checkpoint_refused_with_path_and_problem(bad, surface, ws, tmp_path):
    marker = Path("/tmp/clipforge-fault-pwned")
    marker.unlink(missing_ok=True)
    path = bad.build(ws, fresh_dir(tmp_path))
    rc, _, err = run_cli(_surface(surface, ws, path))
    assert rc == 1 and "Traceback" not in err, err[-3000:]
    lines = error_lines(err)
    assert len(lines) == 1, err[-3000:]
    for pattern in bad.patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert not marker.exists()  # nothing in any file ever ran


def test_the_good_files_still_load(ws):
    for key in ("tiny_pt", "tiny_st", "short_st"):
        rc, out, err = run_cli(["info", ws[key], "--json"])
        assert rc == 0, err
        assert json.loads(out)["params"] > 0


def test_every_preset_passes_config_validation():
    """The validation refuses broken files, never a real architecture: every preset's config passes, e.g.
    ViT-SO400M-14-SigLIP-384 (384 px, 14 px patches: the patch conv floors, as in open_clip)."""
    from clipforge.checkpoints.io import CheckpointError, validate_config
    from clipforge.models import get_config, list_models

    refused = {}
    for name in list_models():
        try:
            validate_config(get_config(name), name)
        except CheckpointError as error:
            refused[name] = str(error)
    assert not refused, refused
    assert "ViT-SO400M-14-SigLIP-384" in list_models()
