"""What `embed` reads: an image folder, a .csv/.tsv/.jsonl table (the one table reader,
`clipforge.data.csvjsonl.table_rows`), a .txt file of texts, or WebDataset .tar[.gz] shards -- cut into
numbered shards of items, each item a (metadata row, payload) pair.

`inputs_fingerprint` identifies what a source holds (file names and sizes, or the table's bytes), so a
rerun into the same output folder can tell whether it continues the same job.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clipforge.apps.inputs import collect_images, is_image_path
from clipforge.fileio import read_text

# (metadata row, payload): an image path / BytesIO, a text str, or the error saying why the row is unusable
Item = tuple[dict, object]
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson")


@dataclass(frozen=True)
class ShardPlan:
    index: int
    items: Callable[[], Iterator[Item]]  # re-iterable: called once per attempt
    size: int | None = None  # number of items, when known without reading the data


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def folder_shards(root: Path, shard_size: int) -> list[ShardPlan]:
    paths = collect_images([root])
    plans = []
    for index, chunk in enumerate(_chunks(paths, shard_size)):

        def items(chunk=chunk) -> Iterator[Item]:
            for p in chunk:
                yield {"path": str(p.relative_to(root)), "label": p.parent.name}, p

        plans.append(ShardPlan(index, items, len(chunk)))
    return plans


def plain_value(value):
    """A metadata value parquet can store in one column type: scalars as they are, anything nested
    (lists, objects from JSONL) as its JSON text, undecodable bytes (surrogate escapes) as \\xNN."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value if value is None or isinstance(value, (int, float, bool)) else json.dumps(value)


class BadRow(ValueError):
    """A table row that cannot be used (names file and line); `reason` as in clipforge.data.errors."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def read_rows(path: Path) -> list[tuple[int, dict | BadRow]]:
    """(line number, row) of a table (through the one table reader, malformed rows kept as BadRow so they
    are reported) or of a .txt file (one text a line)."""
    if path.suffix.lower() == ".txt":
        lines = read_text(path, "text file").splitlines()
        return [(n, {"text": line}) for n, line in enumerate(lines, start=1) if line.strip()]
    if not path.name.lower().removesuffix(".gz").endswith(TABLE_SUFFIXES):
        raise ValueError(f"{path}: a table must be .csv, .tsv, .jsonl (optionally .gz) or .txt")
    from clipforge.data.csvjsonl import table_rows

    rows: list[tuple[int, dict | BadRow]] = []

    def bad_row(line: int, reason: str, message: str) -> None:
        rows.append((line, BadRow(f"{path}:{line}: {message}", reason)))

    for line, row in table_rows(path, None, bad_row):
        rows.append((line, row))
    return rows


def table_shards(path: Path, kind: str, column: str, shard_size: int) -> list[ShardPlan]:
    rows = read_rows(path)
    good = [row for _, row in rows if isinstance(row, dict)]
    if not good:
        detail = f" ({len(rows)} malformed rows; first: {rows[0][1]})" if rows else ""
        raise ValueError(f"{path}: the table has no usable rows{detail}")
    if column not in good[0]:
        raise ValueError(f"{path}: no column {column!r}; columns are {sorted(good[0])} (use --column)")
    base = path.parent
    plans = []
    for index, chunk in enumerate(_chunks(rows, shard_size)):

        def items(chunk=chunk) -> Iterator[Item]:
            for line, row in chunk:
                if isinstance(row, BadRow):
                    yield {"path": f"{path}:{line}"}, row
                    continue
                value = row.get(column)
                if value is None or (isinstance(value, str) and not value.strip()):
                    yield (
                        {key: plain_value(v) for key, v in row.items()},
                        BadRow(f"{path}:{line}: empty {column!r}", "missing"),
                    )
                    continue
                meta = {key: plain_value(v) for key, v in row.items()}
                yield meta, plain_value(value) if kind == "text" else base / str(value)

        plans.append(ShardPlan(index, items, len(chunk)))
    return plans


def iter_tar_samples(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """WebDataset convention: consecutive members sharing a key (name up to the first dot) form a sample."""
    current_key, sample = None, {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = os.path.basename(member.name)
                key = os.path.join(os.path.dirname(member.name), name.split(".", 1)[0])
                ext = name.split(".", 1)[1] if "." in name else ""
                if key != current_key and sample:
                    yield current_key, sample
                    sample = {}
                current_key = key
                sample[ext.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(f"{tar_path}: unreadable tar archive ({error})") from error
    if sample:
        yield current_key, sample


def wds_shards(tars: list[Path], kind: str) -> list[ShardPlan]:
    image_exts = ("jpg", "jpeg", "png", "webp")
    text_exts = ("txt", "text", "caption")
    plans = []
    for index, tar_path in enumerate(tars):

        def items(tar_path=tar_path) -> Iterator[Item]:
            for key, sample in iter_tar_samples(tar_path):
                meta = {"key": key, "shard": tar_path.name}
                if "cls" in sample:
                    meta["cls"] = sample["cls"].decode("utf-8", "replace").strip()
                if "json" in sample:
                    meta["json"] = sample["json"].decode("utf-8", "replace")
                exts = image_exts if kind == "image" else text_exts
                found = next((e for e in exts if e in sample), None)
                if found is None:
                    continue  # sample without this modality
                data = sample[found]
                payload = io.BytesIO(data) if kind == "image" else data.decode("utf-8", "replace")
                yield meta, payload

        plans.append(ShardPlan(index, items))
    return plans


def _is_tar_name(spec: str) -> bool:
    return spec.lower().endswith(TAR_SUFFIXES)


def tar_files(source: str | os.PathLike) -> list[Path]:
    """The WebDataset shards a source names (a folder of tars, one tar, or a glob), else []."""
    spec = os.fspath(source)
    path = Path(spec)
    if path.is_dir():
        tars = sorted(p for p in path.iterdir() if _is_tar_name(p.name))
        return tars if tars and not any(is_image_path(p) for p in path.iterdir()) else []
    if _is_tar_name(spec) or glob.has_magic(spec):
        tars = [Path(p) for p in sorted(glob.glob(spec))]
        if not tars:
            raise FileNotFoundError(f"{spec}: no WebDataset shards match")
        return tars
    return []


def plan_source(source: str | os.PathLike, kind: str, column: str | None, shard_size: int) -> list[ShardPlan]:
    """Pick the reader from what `source` is: a folder, a .csv/.jsonl/.txt table, or .tar[.gz] shards."""
    if kind not in ("image", "text"):
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size!r}")
    path = Path(source)
    tars = tar_files(source)
    if tars:
        return wds_shards(tars, kind)
    if path.is_dir():
        if kind == "text":
            raise ValueError(f"{path}: texts come from a .csv/.jsonl/.txt table or WebDataset shards")
        return folder_shards(path, shard_size)
    if path.is_file():
        return table_shards(path, kind, column or ("text" if kind == "text" else "path"), shard_size)
    raise FileNotFoundError(f"{os.fspath(source)}: no such folder, table or shard")


def inputs_fingerprint(source: str | os.PathLike) -> str:
    """sha256 over what the source holds: each file's relative name and size (folders, tars), or the
    bytes of a table. Same source, same fingerprint; an added, removed or rewritten file changes it."""
    digest = hashlib.sha256()
    path = Path(source)
    tars = tar_files(source)
    if tars:
        files = [(p.name, p.stat().st_size) for p in tars]
    elif path.is_dir():
        files = [(os.fspath(p.relative_to(path)), p.stat().st_size) for p in collect_images([path])]
    else:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        files = []
    for name, size in files:
        digest.update(f"{name}\0{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def image_location(source: str | os.PathLike, kind: str, column: str | None) -> dict:
    """Where the image files behind metadata rows live (for thumbnails): root folder + path column."""
    path = Path(source)
    if kind != "image" or tar_files(source):
        return {}
    if path.is_dir():
        return {"image_root": str(path.resolve()), "image_column": "path"}
    if path.is_file():
        return {"image_root": str(path.resolve().parent), "image_column": column or "path"}
    return {}
