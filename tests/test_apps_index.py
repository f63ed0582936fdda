"""faiss index choice, recall of approximate indexes against exact search, and the index folder round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from clipforge.apps.index import build_faiss, choose_kind, recall_at_k  # noqa: E402


def clustered(n: int, dim: int = 64, clusters: int = 200, seed: int = 0) -> np.ndarray:
    """Random-but-clustered unit vectors, like real embeddings (which are far from uniform)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    faiss.omp_set_num_threads(1)


def test_kind_chosen_by_size():
    assert [choose_kind(n) for n in (10, 49_999, 50_000, 999_999, 5_000_000)] == [
        "flat",
        "flat",
        "ivf",
        "ivf",
        "ivfpq",
    ]


def test_exact_index_has_recall_one():
    vectors = clustered(2_000)
    index, params = build_faiss(vectors, "auto")
    assert params["kind"] == "flat"
    assert recall_at_k(index, vectors, 10, 200) == 1.0


@pytest.mark.parametrize(
    ("kind", "min_recall"), [("ivf", 0.9), ("hnsw", 0.9), pytest.param("ivfpq", 0.3, marks=pytest.mark.slow)]
)
def test_approximate_recall_at_10_on_20k_clustered(kind, min_recall):
    vectors = clustered(20_000)
    index, params = build_faiss(vectors, kind)
    assert index.ntotal == 20_000 and params["kind"] == kind
    recall = recall_at_k(index, vectors, k=10, num_queries=300)
    print(f"{kind}: recall@10 = {recall:.3f} {params}")
    assert min_recall <= recall <= 1.0


def test_index_dir_round_trip(tmp_path):
    from clipforge.apps.index import build_index_dir
    from clipforge.apps.search import SearchIndex

    vectors = clustered(3_000, dim=32)
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(emb / "emb-00000.npy", vectors[:2_000].astype(np.float16))
    np.save(emb / "emb-00001.npy", vectors[2_000:].astype(np.float16))
    for shard, (lo, hi) in enumerate([(0, 2_000), (2_000, 3_000)]):
        lines = "".join(json.dumps({"row": i}) + "\n" for i in range(lo, hi))
        (emb / f"meta-{shard:05d}.jsonl").write_text(lines)
    report = build_index_dir(emb, tmp_path / "idx", "ivf", progress=False, recall_queries=200)
    assert report["count"] == 3_000 and report["kind"] == "ivf" and report["recall_at_10"] > 0.8
    index = SearchIndex(tmp_path / "idx")
    hits = index.search(vectors[[5, 2_500]], k=3)
    assert [h[0].metadata["row"] for h in hits] == [5, 2_500]  # a vector finds itself first
    assert hits[0][0].score == pytest.approx(1.0, abs=2e-3)
