"""Reading WebDataset tar shards (.tar, .tar.gz) sample by sample with Python's streaming `tarfile`.

A sample is the group of consecutive members sharing a key (`000123.jpg`, `000123.cls`, `000123.json`); its
position is (shard index, sample offset inside the shard), which is what resume records.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
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


def _open_stream(path: Path):
    """A buffered byte stream of the tar: gzip is detected by its magic bytes; None for other compressions."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        return io.BufferedReader(gzip.open(path, "rb"), buffer_size=1 << 20)
    if magic[:3] == b"BZh" or magic[:6] == b"\xfd7zXZ\x00":
        return None
    return open(path, "rb", buffering=1 << 20)


def _read_exact(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"truncated: wanted {size} bytes, got {len(data)}")
    return data


def _pax_path(data: bytes) -> str | None:
    for line in data.decode("utf-8", "replace").splitlines():
        _, _, record = line.partition(" ")
        if record.startswith("path="):
            return record[5:]
    return None


def iter_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular file, in archive order.

    A small USTAR/GNU/pax reader ~20x faster than `tarfile` on shards of many tiny members; bz2/xz shards go
    through `tarfile`.
    """
    stream = _open_stream(path)
    if stream is None:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if member.isfile():
                    handle = tar.extractfile(member)
                    yield member.name, handle.read() if handle else b""
        return
    with stream:
        long_name = None
        while True:
            header = stream.read(512)
            if len(header) < 512 or header == bytes(512):
                return  # end-of-archive blocks (or a clean end)
            if sum(header) - sum(header[148:156]) + 8 * 32 != int(header[148:156].strip(b"\0 ") or b"0", 8):
                raise tarfile.HeaderError("bad tar header checksum")
            size = int(header[124:136].strip(b"\0 ") or b"0", 8)
            kind = header[156:157]
            data = _read_exact(stream, size)
            _read_exact(stream, -size % 512)
            if kind in (b"L", b"x"):
                long_name = data.rstrip(b"\0").decode("utf-8", "replace") if kind == b"L" else _pax_path(data)
                continue
            if kind not in (b"0", b"\0", b"7"):
                long_name = None
                continue  # directories, links, global pax headers
            name = header[:100].rstrip(b"\0").decode("utf-8", "replace")
            prefix = (
                header[345:500].rstrip(b"\0").decode("utf-8", "replace")
                if header[257:262] == b"ustar"
                else ""
            )
            name = long_name or (f"{prefix}/{name}" if prefix else name)
            long_name = None
            yield name, data


def iter_shard(path: Path, start: int = 0) -> Iterator[tuple[int, dict[str, bytes]]]:
    """(offset, {"__key__": key, ext: bytes, ...}) for each sample of one shard, skipping the first `start`."""
    offset, current, key = 0, {}, None
    try:
        for name, data in iter_members(Path(path)):
            member_key, ext = split_key(name)
            if member_key != key and current:
                if offset >= start:
                    yield offset, current
                offset, current = offset + 1, {}
            key = member_key
            current["__key__"] = key
            if offset >= start:
                current[ext] = data
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
