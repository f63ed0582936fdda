"""faiss indexes over unit embeddings (inner product = cosine), chosen by collection size.

    n <  50k     exact  IndexFlatIP                       recall 1.0, brute force is fast enough
    n <  1M      ivf    IVF(4*sqrt n) + flat lists         ~0.95+ recall at nprobe = nlist/16
    n >= 1M      ivfpq  IVF + product quantisation (8 bit) memory ~ dim/4 bytes/vector, lower recall
    hnsw (on request)   HNSW graph, M=32                   high recall, no training, more memory

Every approximate build measures recall@10 against exact search on a sample of the vectors as queries.

Index folder layout: index.faiss, index.json (kind, counts, recall), metadata.jsonl, thumbs/NNNNNNNN.jpg.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from clipforge.extras import require
from clipforge.fileio import OutputInUseError, atomic_write_json, atomic_write_text, ensure_dir

EXACT_MAX = 50_000
IVF_MAX = 1_000_000
KINDS = ("auto", "flat", "ivf", "hnsw", "ivfpq")
THUMB_SIZE = 160


def choose_kind(n: int) -> str:
    return "flat" if n < EXACT_MAX else "ivf" if n < IVF_MAX else "ivfpq"


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build_faiss(vectors: np.ndarray, kind: str = "auto", *, nprobe: int | None = None, seed: int = 0):
    """Build and fill an inner-product index over unit rows of `vectors` (N, E); returns (index, params)."""
    faiss = require("faiss", "building an index")

    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
    vectors = _unit(vectors)
    n, dim = vectors.shape
    kind = choose_kind(n) if kind == "auto" else kind
    params: dict = {"kind": kind}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
        params.update(M=32, efSearch=64)
    else:
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            m = next(m for m in (dim // 4, dim // 8, dim // 2, dim) if m and dim % m == 0)
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
            params["pq_m"] = m
        sample = vectors
        if n > 256 * nlist:
            rng = np.random.default_rng(seed)
            sample = vectors[rng.choice(n, 256 * nlist, replace=False)]
        index.train(sample)
        index.nprobe = nprobe or max(8, nlist // 16)
        params.update(nlist=nlist, nprobe=index.nprobe)
    for start in range(0, n, 100_000):
        index.add(vectors[start : start + 100_000])
    return index, params


def recall_at_k(index, vectors: np.ndarray, k: int = 10, num_queries: int = 1000, seed: int = 0) -> float:
    """Mean |approx top-k ∩ exact top-k| / k over a sample of the indexed vectors used as queries."""
    faiss = require("faiss", "building an index")

    vectors = _unit(vectors)
    rng = np.random.default_rng(seed)
    queries = vectors[rng.choice(len(vectors), min(num_queries, len(vectors)), replace=False)]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    k = min(k, len(vectors))
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    hits = sum(len(set(t) & set(f)) for t, f in zip(truth.tolist(), found.tolist(), strict=True))
    return hits / (len(queries) * k)


def write_thumbnails(out_dir: Path, metadata: list[dict], info: dict, progress: bool) -> int:
    """thumbs/<row:08d>.jpg for rows whose image file is known (folder or table sources); each written
    under a temporary name, so a full disk leaves no torn thumbnail."""
    from clipforge.decode import ImageError, decode_rgb
    from clipforge.fileio import atomic_path

    root, column = info.get("image_root"), info.get("image_column")
    if root and column:
        sources = ((i, Path(root) / str(row[column])) for i, row in enumerate(metadata) if column in row)
    elif info.get("kind") == "image" and metadata and "key" in metadata[0] and "shard" in metadata[0]:
        sources = webdataset_images(info["source"], metadata)
    else:
        return 0
    thumbs = ensure_dir(out_dir / "thumbs", "thumbnail folder")
    made = 0
    for row_id, source in tqdm(sources, total=len(metadata), desc="thumbnails", disable=not progress):
        target = thumbs / f"{row_id:08d}.jpg"
        if not target.exists():
            try:
                image = decode_rgb(source)
            except (ImageError, OSError):
                continue
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
            with atomic_path(target) as tmp:
                image.save(tmp, "JPEG", quality=85)
        made += 1
    return made


def webdataset_images(source: str, metadata: list[dict]):
    """(row id, image bytes) for rows embedded from WebDataset shards, read again from the tars."""
    from clipforge.apps.sources import plan_source

    row_of = {(row["shard"], row["key"]): i for i, row in enumerate(metadata)}
    for plan in plan_source(source, "image", None, 1):
        for meta, payload in plan.items():
            row_id = row_of.get((meta["shard"], meta["key"]))
            if row_id is not None:
                yield row_id, payload


INDEX_FILES = ("index.faiss", "index.json", "metadata.jsonl")


def embeddings_id(info: dict, count: int, embeddings_dir: Path) -> dict:
    """What an index was built from: the embedding run (weights, inputs, settings) and its row count."""
    keys = ("weights", "inputs", "kind", "dim", "dtype", "shard_size", "source")
    return {"embeddings_dir": str(embeddings_dir.resolve()), "count": count, **{k: info.get(k) for k in keys}}


def claim_index_dir(out_dir: Path, built_from: dict, overwrite: bool) -> None:
    """Rebuild the same index in place (its thumbnails are reused), refuse another one's folder, or
    (overwrite) delete the old index files and thumbnails first."""
    from clipforge.fileio import is_temp_name, read_text

    info_path = out_dir / "index.json"
    previous = None
    if info_path.is_file():
        try:
            previous = json.loads(read_text(info_path, "index.json")).get("built_from")
        except (ValueError, AttributeError):
            previous = {}
    occupied = any((out_dir / name).exists() for name in INDEX_FILES) or (out_dir / "thumbs").is_dir()
    if not overwrite:
        if previous == built_from or not occupied:
            return
        raise OutputInUseError(
            f"{out_dir} holds an index of other embeddings (built from {(previous or {}).get('embeddings_dir')}); "
            "use another --out, or --overwrite to replace it (its thumbnails would not match)"
        )
    for name in INDEX_FILES:
        (out_dir / name).unlink(missing_ok=True)
    thumbs = out_dir / "thumbs"
    if thumbs.is_dir():
        for path in thumbs.iterdir():
            if path.suffix == ".jpg" or is_temp_name(path.name):
                path.unlink()
    for path in out_dir.iterdir():
        if is_temp_name(path.name):
            path.unlink()


def build_index_dir(
    embeddings_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    kind: str = "auto",
    *,
    nprobe: int | None = None,
    thumbnails: bool = True,
    recall_queries: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """`clipforge embed` output -> index folder; returns the report written to index.json (written last:
    a folder without it holds no finished index)."""
    faiss = require("faiss", "building an index")

    from clipforge.apps.embed import INFO_FILE, load_embeddings
    from clipforge.fileio import atomic_path, read_text

    if nprobe is not None and (not isinstance(nprobe, int) or nprobe < 1):
        raise ValueError(f"nprobe must be >= 1, got {nprobe!r}")
    embeddings_dir, out_dir = Path(embeddings_dir), Path(out_dir)
    vectors, metadata = load_embeddings(embeddings_dir)
    info_path = embeddings_dir / INFO_FILE
    info = json.loads(read_text(info_path, INFO_FILE)) if info_path.is_file() else {}
    built_from = embeddings_id(info, len(vectors), embeddings_dir)
    ensure_dir(out_dir, "index folder")
    claim_index_dir(out_dir, built_from, overwrite)
    index, params = build_faiss(vectors, kind, nprobe=nprobe)
    recall = 1.0 if params["kind"] == "flat" else recall_at_k(index, vectors, 10, recall_queries)
    with atomic_path(out_dir / "index.faiss") as tmp:
        faiss.write_index(index, str(tmp))
    atomic_write_text(out_dir / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in metadata))
    num_thumbs = write_thumbnails(out_dir, metadata, info, progress) if thumbnails else 0
    report = {
        **params,
        "count": int(len(vectors)),
        "dim": int(vectors.shape[1]),
        "recall_at_10": round(recall, 4),
        "recall_queries": min(recall_queries, len(vectors)),
        "thumbnails": num_thumbs,
        "model": info.get("model", ""),
        "weights": info.get("weights"),
        "embedding_kind": info.get("kind", ""),
        "embeddings_dir": str(embeddings_dir.resolve()),
        "built_from": built_from,
    }
    atomic_write_json(out_dir / "index.json", report)
    return report
