"""Shared by the fault-corpus tests (tests/test_faults_*.py; no tests here): a workspace of generated files
(tiny checkpoints, images, tables -- nothing committed), a way to run `clipforge ...` in-process and get
(exit status, stdout, stderr), and a subprocess driver for faults the test process must not suffer itself:
a file-size limit (the kernel refuses writes past N bytes, as on a full disk) and no root override of file
permissions (so a read-only folder is read-only even when the tests run as root).

Every case asserts the exact outcome: the exit status, the one error line and what it names, or the
correct result; and that no output file is left torn or under a temporary name.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534  # the fallback user where root cannot drop its capabilities


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`clipforge argv...` in this process: (exit status, stdout, stderr)."""
    from clipforge.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def error_lines(stderr: str) -> list[str]:
    """The `clipforge X: error: ...` lines (progress bars and warnings aside)."""
    return [line for line in stderr.splitlines() if ": error: " in line or "internal error" in line]


def png_header(width: int, height: int, color_type: int = 0) -> bytes:
    """A PNG that declares width x height (8-bit grey) in a valid IHDR but holds almost no data: decoders
    learn its size from the header, so a size check must refuse it before reading pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def temp_leftovers(folder: Path) -> list[str]:
    """Temporary names clipforge's writers use, left anywhere under `folder` (there must be none)."""
    return sorted(p.name for p in folder.rglob("*") if ".partial" in p.name)


@functools.cache
def _workspace(root: str) -> dict[str, Path]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # readable by the unprivileged user of the read-only cases
    import clipforge
    from clipforge.checkpoints import save

    torch.manual_seed(0)
    tiny = clipforge.create_model("tiny-vit").eval()
    other = clipforge.create_model("tiny-vit").eval()  # same architecture, other weights
    short = clipforge.create_model(replace(tiny.config, text=replace(tiny.config.text, context_length=16)))
    files = {
        "tiny_pt": save(tiny, root / "tiny.pt"),
        "tiny_st": save(tiny, root / "tiny.safetensors"),
        "other_pt": save(other, root / "other.pt"),
        "short_st": save(short.eval(), root / "short-context.safetensors"),
    }
    images = root / "images"
    (images / "cats").mkdir(parents=True)
    (images / "dogs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        for folder in ("cats", "dogs"):
            pixels = rng.integers(0, 255, (40 + 8 * i, 48, 3), np.uint8)
            Image.fromarray(pixels).save(images / folder / f"{folder[:-1]}{i}.jpg", quality=90)
    files["images"] = images
    files["one_image"] = images / "cats" / "cat0.jpg"
    broken = root / "broken"
    broken.mkdir()
    (broken / "not-a-jpeg.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (broken / "empty.png").write_bytes(b"")
    thin = io.BytesIO()
    Image.new("L", (1, 300_000)).save(thin, "PNG", optimize=True)
    (broken / "thin.png").write_bytes(thin.getvalue())  # ~660 bytes, 1 x 300,000 pixels
    (broken / "strip.png").write_bytes(png_header(1, 40_000_000))  # exactly 40 Mpx, 1:40,000,000
    files["broken"] = broken
    files["thin_png"], files["strip_png"] = broken / "thin.png", broken / "strip.png"
    heic = root / "heic-only"
    heic.mkdir()
    for i in range(2):
        (heic / f"IMG_{i}.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    files["heic_only"] = heic
    for path in root.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return files


def workspace(tmp_path_factory) -> dict[str, Path]:
    """The generated inputs, built once per test process (xdist worker) under pytest's temp root."""
    return _workspace(str(tmp_path_factory.getbasetemp() / "fault-workspace"))


def fresh_dir(tmp_path: Path, name: str = "work") -> Path:
    """A folder an unprivileged user can enter (pytest's own temp folders are 0700)."""
    folder = tmp_path / name
    folder.mkdir()
    for path in (tmp_path, folder):
        os.chmod(path, 0o755)
    return folder


_DRIVER = r"""
import contextlib, io, json, os, resource, signal, sys
cases = json.loads(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the size limit a write fails with EFBIG, not a kill
from clipforge.cli import main
results = []
for case in cases:
    out, err = io.StringIO(), io.StringIO()
    limit = case.get("fsize")
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(case["argv"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    results.append({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write("\n@@RESULTS@@" + json.dumps(results))
"""


def _without_root_override() -> None:
    """preexec_fn: as root, drop the capabilities that let root ignore file permissions (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH) from the child's bounding set, so a 0555 folder is read-only for it; where that is
    not allowed, become user nobody instead."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    if all(libc.prctl(pr_capbset_drop, cap, 0, 0, 0) == 0 for cap in (1, 2)):
        return
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def run_isolated(cases: list[dict], unprivileged: bool = False, timeout_s: float = 600) -> list[dict]:
    """Run `clipforge` cases in one fresh process: each case {"argv": [...], "fsize": bytes or None}.
    unprivileged: when the tests run as root, without root's permission override (a 0555 folder is then
    really read-only, as for any user)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CLIPFORGE_CACHE_DIR": "/tmp/clipforge-faults"}
    payload = json.dumps([{**c, "argv": [str(a) for a in c["argv"]]} for c in cases])
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, payload],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        preexec_fn=_without_root_override if unprivileged and os.geteuid() == 0 else None,
    )
    marker = result.stdout.rfind("@@RESULTS@@")
    assert marker >= 0, f"driver failed (rc {result.returncode}):\n{result.stderr[-3000:]}"
    return json.loads(result.stdout[marker + len("@@RESULTS@@") :])
