"""Bulk embedding into sharded .npy files plus row metadata; resumable and split across ranks.

Layout of an output folder:
    embeddings.json          what was embedded: model, kind (image|text), dim, dtype, shard count
    emb-00000.npy            (rows, E) unit embeddings, float16 or float32
    meta-00000.parquet       one metadata row per embedding row (or meta-00000.jsonl)
A shard counts as finished when its .npy exists (written atomically after its metadata), so a rerun
skips it. Under torchrun, rank r of W embeds shards r, r+W, r+2W, ...
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from clipforge.apps.inputs import collect_images, is_image_path
from clipforge.decode import ImageError, open_image
from clipforge.extras import require
from clipforge.fileio import atomic_write, atomic_write_json, atomic_write_text

Item = tuple[dict, object]  # (metadata row, payload: image path / BytesIO, or text str)


@dataclass(frozen=True)
class ShardPlan:
    index: int
    items: Callable[[], Iterator[Item]]  # re-iterable: called once per attempt


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)] or []


def folder_shards(root: Path, shard_size: int) -> list[ShardPlan]:
    paths = collect_images([root])
    plans = []
    for index, chunk in enumerate(_chunks(paths, shard_size)):

        def items(chunk=chunk) -> Iterator[Item]:
            for p in chunk:
                yield {"path": str(p.relative_to(root)), "label": p.parent.name}, p

        plans.append(ShardPlan(index, items))
    return plans


def read_table(path: Path) -> list[dict]:
    """Rows of a .csv (header row) or .jsonl file; errors name the line."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: invalid JSON ({err.msg})") from err
        return rows
    if path.suffix.lower() == ".txt":
        return [{"text": ln} for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    raise ValueError(f"{path}: table must be .csv, .jsonl or .txt")


def table_shards(path: Path, kind: str, column: str, shard_size: int) -> list[ShardPlan]:
    rows = read_table(path)
    if rows and column not in rows[0]:
        raise ValueError(f"{path}: no column {column!r}; columns are {sorted(rows[0])} (use --column)")
    base = path.parent
    plans = []
    for index, chunk in enumerate(_chunks(rows, shard_size)):

        def items(chunk=chunk) -> Iterator[Item]:
            for row in chunk:
                value = row[column]
                payload = str(value) if kind == "text" else base / str(value)
                yield (
                    {k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in row.items()},
                    payload,
                )

        plans.append(ShardPlan(index, items))
    return plans


def iter_tar_samples(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """WebDataset convention: consecutive members sharing a key (name up to the first dot) form a sample."""
    current_key, sample = None, {}
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
                    meta["cls"] = sample["cls"].decode().strip()
                if "json" in sample:
                    meta["json"] = sample["json"].decode()
                exts = image_exts if kind == "image" else text_exts
                found = next((e for e in exts if e in sample), None)
                if found is None:
                    continue  # sample without this modality
                payload = io.BytesIO(sample[found]) if kind == "image" else sample[found].decode()
                yield meta, payload

        plans.append(ShardPlan(index, items))
    return plans


def plan_source(source: str | os.PathLike, kind: str, column: str | None, shard_size: int) -> list[ShardPlan]:
    """Pick the reader from what `source` is: a folder, a .csv/.jsonl/.txt table, or .tar[.gz] shards."""
    if kind not in ("image", "text"):
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    spec = os.fspath(source)
    path = Path(spec)
    if path.is_dir():
        tars = sorted(p for p in path.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tgz")))
        if tars and not any(is_image_path(p) for p in path.iterdir()):
            return wds_shards(tars, kind)
        if kind == "text":
            raise ValueError(f"{path}: texts come from a .csv/.jsonl/.txt table or WebDataset shards")
        return folder_shards(path, shard_size)
    if spec.endswith((".tar", ".tar.gz", ".tgz")) or any(c in spec for c in "*?["):
        import glob

        tars = [Path(p) for p in sorted(glob.glob(spec))]
        if not tars:
            raise FileNotFoundError(f"{spec}: no WebDataset shards match")
        return wds_shards(tars, kind)
    if path.is_file():
        return table_shards(path, kind, column or ("text" if kind == "text" else "path"), shard_size)
    raise FileNotFoundError(f"{spec}: no such folder, table or shard")


def image_location(source: str | os.PathLike, kind: str, column: str | None) -> dict:
    """Where the image files behind metadata rows live (for thumbnails): root folder + path column."""
    path = Path(source)
    if kind != "image":
        return {}
    if path.is_dir() and any(is_image_path(p) for p in path.rglob("*")):
        return {"image_root": str(path.resolve()), "image_column": "path"}
    if path.is_file() and not path.name.endswith((".tar", ".tar.gz", ".tgz")):
        return {"image_root": str(path.resolve().parent), "image_column": column or "path"}
    return {}


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment; (0, 1) outside it."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return rank, world


def shard_paths(out_dir: Path, index: int, metadata_format: str) -> tuple[Path, Path]:
    return out_dir / f"emb-{index:05d}.npy", out_dir / f"meta-{index:05d}.{metadata_format}"


def write_metadata(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".parquet":
        pa = require("pyarrow", "parquet metadata (or use --metadata jsonl)")
        pq = require("pyarrow.parquet", "parquet metadata (or use --metadata jsonl)")

        table = pa.Table.from_pylist(rows) if rows else pa.table({"path": pa.array([], pa.string())})
        atomic_write(path, lambda f: pq.write_table(table, f))
    else:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_metadata(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        pq = require("pyarrow.parquet", "reading parquet metadata")

        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@torch.inference_mode()
def embed_items(model, preprocess, items: Iterator[Item], kind: str, batch_size: int, failures: list):
    """Embed one shard's items -> ((N, E) float32 unit embeddings, N metadata rows)."""
    device = next(model.parameters()).device
    metas, chunks = [], []
    if kind == "text":
        from clipforge.encode import encode_texts

        pairs = list(items)
        metas = [m for m, _ in pairs]
        if pairs:
            chunks.append(encode_texts(model, [t for _, t in pairs], batch_size=batch_size).numpy())
    else:
        batch, batch_meta = [], []

        def flush() -> None:
            feats = model.encode_image(torch.stack(batch).to(device), normalize=True)  # (B, E)
            chunks.append(feats.float().cpu().numpy())
            metas.extend(batch_meta)
            batch.clear()
            batch_meta.clear()

        for meta, payload in items:
            try:
                batch.append(preprocess(open_image(payload)))
                batch_meta.append(meta)
            except (ImageError, OSError) as err:
                failures.append({**meta, "error": str(err)})
                continue
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    dim = model.config.embed_dim
    return (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)), metas


def embed_source(
    model,
    preprocess,
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    kind: str = "image",
    column: str | None = None,
    shard_size: int = 10_000,
    dtype: str = "float16",
    metadata_format: str = "parquet",
    batch_size: int = 64,
    model_name: str = "",
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Embed everything in `source` into `out_dir`; return counts of written / skipped shards and failures."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    if metadata_format not in ("parquet", "jsonl"):
        raise ValueError(f"metadata format must be parquet or jsonl, got {metadata_format!r}")
    if rank is None or world_size is None:
        rank, world_size = distributed_rank()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_source(source, kind, column, shard_size)
    info = {
        "kind": kind,
        "model": model_name,
        "dim": model.config.embed_dim,
        "dtype": dtype,
        "num_shards": len(plans),
        "metadata_format": metadata_format,
        "source": os.fspath(source),
        **image_location(source, kind, column),
    }
    if rank == 0:
        atomic_write_json(out_dir / "embeddings.json", info)
    mine = [p for p in plans if p.index % world_size == rank]
    written, skipped, rows, failures = [], [], 0, []
    for plan in tqdm(mine, desc=f"embed shards (rank {rank})", unit="shard", disable=not progress):
        emb_path, meta_path = shard_paths(out_dir, plan.index, metadata_format)
        if emb_path.is_file() and meta_path.is_file():
            skipped.append(plan.index)
            continue
        embeddings, metas = embed_items(model, preprocess, plan.items(), kind, batch_size, failures)
        write_metadata(meta_path, metas)
        array = embeddings.astype(dtype)
        atomic_write(emb_path, lambda f, a=array: np.save(f, a))  # last: marks the shard finished
        written.append(plan.index)
        rows += len(metas)
    return {
        **info,
        "rank": rank,
        "world_size": world_size,
        "written": written,
        "skipped": skipped,
        "rows": rows,
        "failures": failures,
    }


def load_embeddings(folder: str | os.PathLike) -> tuple[np.ndarray, list[dict]]:
    """All finished shards of an `embed` output, in shard order: ((N, E) float32, N metadata rows)."""
    folder = Path(folder)
    arrays, metas = [], []
    for emb_path in sorted(folder.glob("emb-*.npy")):
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
    return np.concatenate(arrays), metas
