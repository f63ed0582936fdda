"""Bulk embedding into sharded .npy files plus row metadata; resumable and split across ranks.

Layout of an output folder:
    embeddings.json          what was embedded and how: model (+ weights fingerprint), kind, dim, dtype,
                             shard size, source (+ fingerprint of its files), shard count
    emb-00000.npy            (rows, E) unit embeddings, float16 or float32
    meta-00000.parquet       one metadata row per embedding row (or meta-00000.jsonl)
    skipped-00000.jsonl      the shard's inputs that could not be used, with reasons
    skipped.csv              all skipped inputs of the run (skipped-rank<r>.csv per rank under torchrun)
A shard counts as finished when its .npy exists (written atomically after its skip list and metadata) and
matches its metadata's row count, so a rerun skips it. A rerun continues only the same job -- same source
files, model weights and settings, as recorded in embeddings.json -- and otherwise refuses, or starts clean
with `overwrite=True`. Under torchrun, rank r of W embeds shards r, r+W, r+2W, ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from clipforge.apps.skips import NothingProcessedError, Skipped
from clipforge.apps.sources import BadRow, Item, ShardPlan, image_location, inputs_fingerprint, plan_source
from clipforge.decode import ImageError, open_image
from clipforge.extras import require
from clipforge.fileio import (
    OutputInUseError,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    ensure_dir,
    is_temp_name,
    read_text,
)

__all__ = ["embed_source", "load_embeddings", "plan_source"]

INFO_FILE = "embeddings.json"
# embeddings.json fields that must agree for a rerun to continue the same job
RUN_FIELDS = ("kind", "weights", "dim", "dtype", "shard_size", "column", "metadata_format",
              "source", "inputs")  # fmt: skip
OUR_FILES = ("emb-", "meta-", "skipped")


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment; (0, 1) outside it."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ValueError("RANK and WORLD_SIZE must be whole numbers (as torchrun sets them)") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return rank, world


def shard_paths(out_dir: Path, index: int, metadata_format: str) -> tuple[Path, Path, Path]:
    return (out_dir / f"emb-{index:05d}.npy", out_dir / f"meta-{index:05d}.{metadata_format}",
            out_dir / f"skipped-{index:05d}.jsonl")  # fmt: skip


def write_metadata(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".parquet":
        pa = require("pyarrow", "parquet metadata (or use --metadata jsonl)")
        pq = require("pyarrow.parquet", "parquet metadata (or use --metadata jsonl)")
        table = (
            pa.Table.from_pylist(_one_type_per_column(rows))
            if rows
            else pa.table({"path": pa.array([], pa.string())})
        )
        atomic_write(path, lambda f: pq.write_table(table, f))
    else:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _one_type_per_column(rows: list[dict]) -> list[dict]:
    """Parquet needs one type per column: a column whose rows mix types (1 and "1") is stored as text."""
    types: dict[str, set] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                types.setdefault(key, set()).add(type(value))
    mixed = {key for key, kinds in types.items() if len(kinds) > 1}
    if not mixed:
        return rows
    return [{k: (str(v) if k in mixed and v is not None else v) for k, v in row.items()} for row in rows]


def read_metadata(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        pq = require("pyarrow.parquet", "reading parquet metadata")
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in read_text(path, "metadata").splitlines() if line]


def metadata_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return require("pyarrow.parquet", "reading parquet metadata").read_metadata(path).num_rows
    return sum(1 for line in read_text(path, "metadata").splitlines() if line)


def _payload_name(meta: dict, payload) -> str:
    if isinstance(payload, (str, os.PathLike)) and not isinstance(payload, str):
        return os.fspath(payload)
    return str(meta.get("path") or meta.get("key") or meta.get("text", "")[:80])


@torch.inference_mode()
def embed_items(
    model, preprocess, items: Iterator[Item], kind: str, batch_size: int, skipped: Skipped, bar=None
):
    """Embed one shard's items -> ((N, E) float32 unit embeddings, N metadata rows); unusable items are
    added to `skipped` with their reason, the progress bar moves per item."""
    device = next(model.parameters()).device
    metas, chunks, batch, batch_meta = [], [], [], []

    def flush() -> None:
        if kind == "text":
            from clipforge.encode import encode_texts

            chunks.append(encode_texts(model, batch, batch_size=batch_size).float().numpy())
        else:
            feats = model.encode_image(torch.stack(batch).to(device), normalize=True)  # (B, E)
            chunks.append(feats.float().cpu().numpy())
        metas.extend(batch_meta)
        batch.clear()
        batch_meta.clear()

    for meta, payload in items:
        if bar is not None:
            bar.update(1)
        try:
            if isinstance(payload, Exception):  # a row the source could not use (apps.sources.BadRow)
                raise payload
            batch.append(payload if kind == "text" else preprocess(open_image(payload)))
            batch_meta.append(meta)
        except (ImageError, OSError, BadRow) as err:
            skipped.add(_payload_name(meta, payload), err)
            continue
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    dim = model.config.embed_dim
    return (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)), metas


def run_record(model, source, kind, column, shard_size, dtype, metadata_format, model_name) -> dict:
    """What embeddings.json says about the job (RUN_FIELDS decide whether a rerun continues it)."""
    from clipforge.apps.provenance import weights_id

    return {
        "kind": kind,
        "model": model_name,
        "weights": weights_id(model),
        "dim": model.config.embed_dim,
        "dtype": dtype,
        "shard_size": shard_size,
        "column": column,
        "metadata_format": metadata_format,
        "source": str(Path(source).resolve()) if Path(source).exists() else os.fspath(source),
        "inputs": inputs_fingerprint(source),
    }


def _our_files(out_dir: Path) -> list[Path]:
    return [p for p in out_dir.iterdir() if p.name.startswith(OUR_FILES) or is_temp_name(p.name)]


def claim_output(out_dir: Path, record: dict, overwrite: bool, mine: set[int], rank: int) -> None:
    """Continue the same job in `out_dir`, refuse another job's folder, or (overwrite) clear it: each rank
    removes its own shards, rank 0 also the run record, the skip lists and shards beyond the plan."""
    info_path = out_dir / INFO_FILE
    previous = None
    if info_path.is_file():
        try:
            previous = json.loads(read_text(info_path, INFO_FILE))
        except (ValueError, json.JSONDecodeError):
            previous = {}
    found = _our_files(out_dir)
    if not overwrite:
        if previous is not None:
            differ = [f for f in RUN_FIELDS if previous.get(f) != record[f]]
            if differ:
                detail = "; ".join(f"{f}: {previous.get(f)!r} then, {record[f]!r} now" for f in differ[:4])
                raise OutputInUseError(
                    f"{out_dir} holds embeddings of another job ({detail}); use another --out, or --overwrite "
                    "to delete them and start clean"
                )
        elif any(p.name.startswith("emb-") for p in found):
            raise OutputInUseError(
                f"{out_dir} holds embedding shards without an {INFO_FILE} (another tool's, or a damaged run); "
                "use another --out, or --overwrite to delete them"
            )
        return
    for path in found:
        index = path.name.split("-")[1].split(".")[0] if path.name.count("-") == 1 else None
        shard = int(index) if index and index.isdigit() else None
        if shard in mine or (rank == 0 and (shard is None or shard >= record.get("num_shards", 0))):
            path.unlink(missing_ok=True)
    if rank == 0:
        info_path.unlink(missing_ok=True)


def _finished(emb_path: Path, meta_path: Path) -> bool:
    if not (emb_path.is_file() and meta_path.is_file()):
        return False
    try:
        return np.load(emb_path, mmap_mode="r").shape[0] == metadata_rows(meta_path)
    except (OSError, ValueError):
        return False  # a damaged shard is redone


def embed_source(
    model,
    preprocess,
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    kind: str = "image",
    column: str | None = None,
    shard_size: int = 1_000,
    dtype: str = "float16",
    metadata_format: str = "parquet",
    batch_size: int = 64,
    model_name: str | dict = "",
    rank: int | None = None,
    world_size: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Embed everything in `source` into `out_dir`; return counts of written / skipped shards and the
    skipped inputs. `model_name`: how to load the model again (see apps.provenance), recorded for search. Raises NothingProcessedError when this run had work and no input was usable."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    if metadata_format not in ("parquet", "jsonl"):
        raise ValueError(f"metadata format must be parquet or jsonl, got {metadata_format!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if rank is None or world_size is None:
        rank, world_size = distributed_rank()
    out_dir = ensure_dir(out_dir, "embedding folder")
    plans = plan_source(source, kind, column, shard_size)
    record = run_record(model, source, kind, column, shard_size, dtype, metadata_format, model_name)
    info = {**record, "num_shards": len(plans), **image_location(source, kind, column)}
    mine = [p for p in plans if p.index % world_size == rank]
    claim_output(out_dir, info, overwrite, {p.index for p in mine}, rank)
    if rank == 0:
        atomic_write_json(out_dir / INFO_FILE, info)
    written, resumed, rows, skipped = _embed_shards(
        model, preprocess, mine, out_dir, info, batch_size, rank, progress
    )
    name = "skipped.csv" if world_size == 1 else f"skipped-rank{rank}.csv"
    skip_list = skipped.write_csv(out_dir / name)
    if written and rows == 0 and len(skipped):
        raise NothingProcessedError(
            f"none of the inputs of {os.fspath(source)} could be embedded: {skipped.summary()}; the list is in "
            f"{skip_list}; first: {skipped.rows[0]['error']}"
        )
    return {**info, "rank": rank, "world_size": world_size, "written": written, "skipped": resumed,
            "rows": rows, "failures": skipped.rows, "skipped_file": str(skip_list)}  # fmt: skip


def _embed_shards(
    model, preprocess, plans: list[ShardPlan], out_dir: Path, info: dict, batch_size, rank, progress
):
    kind, dtype, metadata_format = info["kind"], info["dtype"], info["metadata_format"]
    sizes = [p.size for p in plans]
    total = sum(sizes) if all(s is not None for s in sizes) else None
    written, resumed, rows, skipped = [], [], 0, Skipped()
    bar = tqdm(total=total, desc=f"embed (rank {rank})", unit=kind, disable=not progress)
    for plan in plans:
        emb_path, meta_path, skip_path = shard_paths(out_dir, plan.index, metadata_format)
        if _finished(emb_path, meta_path):
            resumed.append(plan.index)
            if skip_path.is_file():
                skipped.extend([json.loads(ln) for ln in read_text(skip_path).splitlines() if ln])
            bar.update(plan.size or 0)
            continue
        shard_skipped = Skipped()
        embeddings, metas = embed_items(model, preprocess, plan.items(), kind, batch_size, shard_skipped, bar)
        atomic_write_text(
            skip_path, "".join(json.dumps({**r, "shard": plan.index}) + "\n" for r in shard_skipped.rows)
        )
        write_metadata(meta_path, metas)
        array = embeddings.astype(dtype)
        atomic_write(emb_path, lambda f, a=array: np.save(f, a))  # last: marks the shard finished
        skipped.extend(shard_skipped.rows)
        written.append(plan.index)
        rows += len(metas)
    bar.close()
    return written, resumed, rows, skipped


def load_embeddings(folder: str | os.PathLike) -> tuple[np.ndarray, list[dict]]:
    """All shards of a finished `embed` output, in shard order: ((N, E) float32, N metadata rows).
    A folder whose run is not finished (shards missing) is an error naming them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such embedding folder (run `clipforge embed` first)")
    info_path = folder / INFO_FILE
    info = json.loads(read_text(info_path, INFO_FILE)) if info_path.is_file() else {}
    emb_paths = sorted(folder.glob("emb-*.npy"))
    if "num_shards" in info:
        expected = {f"emb-{i:05d}.npy" for i in range(int(info["num_shards"]))}
        missing = sorted(expected - {p.name for p in emb_paths})
        if missing:
            raise ValueError(
                f"{folder}: the embedding run is not finished: {len(missing)} of {len(expected)} shards missing "
                f"({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}); rerun the same `clipforge embed` "
                "command to finish it"
            )
        emb_paths = [p for p in emb_paths if p.name in expected]
    arrays, metas = [], []
    for emb_path in emb_paths:
        index = emb_path.stem.split("-")[1]
        meta_paths = sorted(folder.glob(f"meta-{index}.*"))
        if not meta_paths:
            raise FileNotFoundError(f"{emb_path}: metadata file meta-{index}.parquet/.jsonl missing")
        array = np.load(emb_path)
        rows = read_metadata(meta_paths[0])
        if len(rows) != len(array):
            raise ValueError(f"{emb_path}: {len(array)} rows but {meta_paths[0]} has {len(rows)}")
        arrays.append(array.astype(np.float32))
        metas.extend(rows)
    if not arrays:
        raise FileNotFoundError(f"{folder}: no emb-*.npy shards (run `clipforge embed` first)")
    vectors = np.concatenate(arrays)
    if not len(vectors):
        raise ValueError(f"{folder}: the embedding run has 0 rows (every input was skipped; see skipped.csv)")
    return vectors, metas
