"""Reading WebDataset tar shards (.tar, .tar.gz) sample by sample with Python's streaming `tarfile`.

A sample is the group of consecutive members sharing a key (`000123.jpg`, `000123.cls`, `000123.json`); its
position is (shard index, sample offset inside the shard), which is what resume records.
"""

from __future__ import annotations

import glob
import hashlib
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from clipforge.data.errors import DataSourceError

_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(spec: str | Path | list) -> list[Path]:
    """Shard list from a folder, a glob, a brace range `train-{0000..0004}.tar.gz`, or a list of those."""
    if isinstance(spec, (list, tuple)):
        return [path for item in spec for path in expand_shards(item)]
    text = str(spec)
    match = _BRACE.search(text)
    if match:
        first, last = match.groups()
        width = len(first)
        names = [
            text[: match.start()] + str(i).zfill(width) + text[match.end() :]
            for i in range(int(first), int(last) + 1)
        ]
        return [path for name in names for path in expand_shards(name)]
    path = Path(text)
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tgz")))
        if not shards:
            raise DataSourceError(path, "folder holds no .tar / .tar.gz shards")
        return shards
    if any(ch in text for ch in "*?["):
        shards = sorted(Path(p) for p in glob.glob(text))
        if not shards:
            raise DataSourceError(text, "glob matches no shard files")
        return shards
    if not path.is_file():
        raise DataSourceError(path, "shard file not found")
    return [path]


def split_key(name: str) -> tuple[str, str]:
    """`dir/000123.seg.jpg` -> (`dir/000123`, `seg.jpg`): WebDataset's convention (extension after the first dot
    of the base name)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


def iter_shard(path: Path, start: int = 0) -> Iterator[tuple[int, dict[str, bytes]]]:
    """(offset, {"__key__": key, ext: bytes, ...}) for each sample of one shard, skipping the first `start`."""
    offset, current, key = 0, {}, None
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                member_key, ext = split_key(member.name)
                if member_key != key and current:
                    if offset >= start:
                        yield offset, current
                    offset, current = offset + 1, {}
                key = member_key
                if offset < start:  # still read the member to advance the stream; do not keep it
                    current = {"__key__": key}
                    continue
                handle = tar.extractfile(member)
                current["__key__"] = key
                current[ext] = handle.read() if handle else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataSourceError(path, f"unreadable tar shard after sample {offset}: {e}") from e
    if current and offset >= start:
        yield offset, current


def shard_fingerprint(paths: list[Path]) -> str:
    """sha256 over the shards' contents (and names), the key of the decoded-image cache."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
