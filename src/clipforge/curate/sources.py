"""Streaming readers of raw (image, caption) pairs: JSONL, CSV, Parquet (optionally gzipped text) and
WebDataset tar shards. Nothing is read whole: each reader yields one `Pair` at a time.

Input files are split between machines by rank: `assign_files(files, rank, world_size)` gives rank r the
files r, r + W, r + 2W, ... of the sorted list; `rank_from_env()` reads torchrun's RANK/WORLD_SIZE or
SLURM's SLURM_PROCID/SLURM_NTASKS.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from clipforge.data.csvjsonl import table_rows

IMAGE_FIELDS = ("image", "url", "path", "image_path", "image_url", "file_name", "filepath")
CAPTION_FIELDS = ("caption", "text", "title", "alt", "description")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".tsv", ".tsv.gz")
SUFFIXES = (*TEXT_SUFFIXES, ".parquet", ".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Pair:
    """One raw pair. `key` is stable across runs ('<file name>:<row>') and seeds the sampling hash;
    `image` is a path (relative ones resolve against the input file's folder) or a URL, or empty when
    `image_bytes` came inside a WebDataset shard."""

    key: str
    image: str
    caption: str | None
    image_bytes: bytes | None = None
    problem: str | None = None  # a row the table reader could not use (its reason): counted as a drop


def list_input_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files, folders (searched recursively for known suffixes) and globs into a sorted list."""
    found: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and _has_suffix(p))
        elif path.is_file():
            if not _has_suffix(path):
                raise ValueError(f"{path}: unknown input format; valid suffixes: {', '.join(SUFFIXES)}")
            found.add(path)
        else:
            matches = [Path(p) for p in glob.glob(str(item), recursive=True)]
            if not matches:
                raise FileNotFoundError(f"input {item!s} matches no file")
            found.update(p for p in matches if p.is_file() and _has_suffix(p))
    return sorted(found)


def _has_suffix(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


def rank_from_env(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """(rank, world_size) from torchrun (RANK/WORLD_SIZE) or SLURM (SLURM_PROCID/SLURM_NTASKS); (0, 1) alone."""
    env = os.environ if environ is None else environ
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in env and world_var in env:
            rank, world_size = int(env[rank_var]), int(env[world_var])
            if not 0 <= rank < world_size:
                raise ValueError(f"{rank_var}={rank} is outside [0, {world_var}={world_size})")
            return rank, world_size
    return 0, 1


def assign_files(files: Sequence[Path], rank: int, world_size: int) -> list[Path]:
    """Round-robin share of the sorted input files for one rank; every file goes to exactly one rank."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
    return list(files[rank::world_size])


def iter_pairs(
    path: str | os.PathLike, image_field: str | None = None, caption_field: str | None = None
) -> Iterator[Pair]:
    """Yield the pairs of one input file in order. Field names are found automatically
    (image: one of IMAGE_FIELDS; caption: one of CAPTION_FIELDS) unless given."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        yield from _iter_tar(path)
        return
    if name.endswith(".parquet"):
        rows = _iter_parquet(path)
    elif name.endswith(TEXT_SUFFIXES):
        bad: list[Pair] = []  # malformed rows: skipped and counted by reason, as every table reader does
        rows = _good_rows(table_rows(path, None, lambda line, reason, _: bad.append(
            Pair(f"{path.name}:line{line}", "", None, problem=reason))), bad)  # fmt: skip
    else:
        raise ValueError(f"{path}: unknown input format; valid suffixes: {', '.join(SUFFIXES)}")
    base = path.parent
    fields: tuple[str, str] | None = None
    row_index = -1  # counts usable rows only: their keys do not depend on the malformed ones
    for row in rows:
        if isinstance(row, Pair):
            yield row
            continue
        row_index += 1
        if fields is None:
            fields = (
                _pick_field(path, row, image_field, IMAGE_FIELDS, "image"),
                _pick_field(path, row, caption_field, CAPTION_FIELDS, "caption"),
            )
        image = str(row.get(fields[0]) or "")
        if image and "://" not in image and not os.path.isabs(image):
            image = str(base / image)
        caption = row.get(fields[1])
        yield Pair(f"{path.name}:{row_index}", image, None if caption is None else str(caption))


def _good_rows(rows: Iterator[tuple[int, dict]], bad: list[Pair]) -> Iterator[dict | Pair]:
    """The rows' dicts, with the Pairs the reader's on_bad_row collected meanwhile yielded in their place."""
    for _, row in rows:
        yield from bad
        bad.clear()
        yield row
    yield from bad


def _pick_field(path: Path, row: dict, given: str | None, candidates: tuple[str, ...], what: str) -> str:
    if given is not None:
        if given not in row:
            raise ValueError(f"{path}: {what} field {given!r} not found; fields are {sorted(row)}")
        return given
    for name in candidates:
        if name in row:
            return name
    raise ValueError(f"{path}: no {what} field among {sorted(row)}; name one of {candidates} or pass it")


def _iter_parquet(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=8192):
        yield from batch.to_pylist()


def _iter_tar(path: Path) -> Iterator[Pair]:
    """WebDataset shard: members grouped by key (name up to the first dot in the base name), in order."""
    key, sample = None, {}
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, _, base = member.name.rpartition("/")
            stem, _, ext = base.partition(".")
            member_key = f"{folder}/{stem}" if folder else stem
            if member_key != key:
                if key is not None:
                    yield _tar_pair(path, key, sample)
                key, sample = member_key, {}
            sample[ext.lower()] = tar.extractfile(member).read()
        if key is not None:
            yield _tar_pair(path, key, sample)


def _tar_pair(path: Path, key: str, sample: dict[str, bytes]) -> Pair:
    image_bytes = next((sample[ext] for ext in IMAGE_EXTS if ext in sample), None)
    caption = None
    if "txt" in sample:
        caption = sample["txt"].decode("utf-8", errors="replace")
    elif "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: member {key}.json is not valid JSON ({err.msg})") from err
        caption = next((str(meta[f]) for f in CAPTION_FIELDS if isinstance(meta, dict) and f in meta), None)
    return Pair(f"{path.name}:{key}", "", caption, image_bytes)
