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
from clipforge.fileio import atomic_write_json, atomic_write_text

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
    """thumbs/<row:08d>.jpg for rows whose image file is known (folder or table sources)."""
    from clipforge.decode import ImageError, decode_rgb

    root, column = info.get("image_root"), info.get("image_column")
    if root and column:
        sources = ((i, Path(root) / str(row[column])) for i, row in enumerate(metadata) if column in row)
    elif info.get("kind") == "image" and metadata and "key" in metadata[0] and "shard" in metadata[0]:
        sources = webdataset_images(info["source"], metadata)
    else:
        return 0
    thumbs = out_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    made = 0
    for row_id, source in tqdm(sources, total=len(metadata), desc="thumbnails", disable=not progress):
        target = thumbs / f"{row_id:08d}.jpg"
        if not target.exists():
            try:
                image = decode_rgb(source)
            except (ImageError, OSError):
                continue
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
            image.save(target, "JPEG", quality=85)
        made += 1
    return made


def webdataset_images(source: str, metadata: list[dict]):
    """(row id, image bytes) for rows embedded from WebDataset shards, read again from the tars."""
    from clipforge.apps.embed import plan_source

    row_of = {(row["shard"], row["key"]): i for i, row in enumerate(metadata)}
    for plan in plan_source(source, "image", None, 1):
        for meta, payload in plan.items():
            row_id = row_of.get((meta["shard"], meta["key"]))
            if row_id is not None:
                yield row_id, payload


def build_index_dir(
    embeddings_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    kind: str = "auto",
    *,
    nprobe: int | None = None,
    thumbnails: bool = True,
    recall_queries: int = 1000,
    progress: bool = True,
) -> dict:
    """`clipforge embed` output -> index folder; returns the report written to index.json."""
    faiss = require("faiss", "building an index")

    from clipforge.apps.embed import load_embeddings

    embeddings_dir, out_dir = Path(embeddings_dir), Path(out_dir)
    vectors, metadata = load_embeddings(embeddings_dir)
    info_path = embeddings_dir / "embeddings.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    index, params = build_faiss(vectors, kind, nprobe=nprobe)
    recall = 1.0 if params["kind"] == "flat" else recall_at_k(index, vectors, 10, recall_queries)
    out_dir.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out_dir / "index.faiss"))
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
        "embedding_kind": info.get("kind", ""),
        "embeddings_dir": str(embeddings_dir.resolve()),
    }
    atomic_write_json(out_dir / "index.json", report)
    return report
