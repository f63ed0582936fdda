"""Search an index folder by text, by image, or by both (sum of the unit query embeddings)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipforge.decode import open_image
from clipforge.extras import require


@dataclass
class Hit:
    rank: int
    id: int
    score: float
    metadata: dict
    thumbnail: str | None  # name under the index's thumbs/ folder, if one exists

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "id": self.id,
            "score": self.score,
            "metadata": self.metadata,
            "thumbnail": self.thumbnail,
        }


class SearchIndex:
    """A loaded index folder (see clipforge.apps.index); read-only."""

    def __init__(self, folder: str | os.PathLike):
        faiss = require("faiss", "searching an index")

        self.folder = Path(folder).resolve()
        index_path = self.folder / "index.faiss"
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path}: not an index folder (run `clipforge index` first)")
        self.index = faiss.read_index(str(index_path))
        self.info = json.loads((self.folder / "index.json").read_text())
        if "nprobe" in self.info and hasattr(self.index, "nprobe"):
            self.index.nprobe = int(self.info["nprobe"])
        lines = (self.folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
        self.metadata = [json.loads(line) for line in lines if line]
        thumbs = self.folder / "thumbs"
        self.thumbnails = {p.name for p in thumbs.glob("*.jpg")} if thumbs.is_dir() else set()

    def __len__(self) -> int:
        return self.index.ntotal

    @property
    def dim(self) -> int:
        return self.index.d

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """(Q, E) or (E,) query vectors -> per query, the top-k hits best first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise ValueError(f"query dim {queries.shape[1]} != index dim {self.dim} (same model?)")
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        scores, ids = self.index.search(queries, min(k, len(self)))
        results = []
        for score_row, id_row in zip(scores.tolist(), ids.tolist(), strict=True):
            hits = []
            for i, s in zip(id_row, score_row, strict=True):
                if i < 0:
                    continue
                thumb = f"{i:08d}.jpg"
                hits.append(
                    Hit(
                        len(hits) + 1,
                        i,
                        float(s),
                        self.metadata[i],
                        thumb if thumb in self.thumbnails else None,
                    )
                )
            results.append(hits)
        return results


@torch.inference_mode()
def query_embedding(model, preprocess=None, text: str | None = None, image=None) -> np.ndarray:
    """(E,) unit query: the text's embedding, the image's, or the normalised sum of both. `image` is a PIL
    image or anything `clipforge.decode.open_image` reads (a path, bytes), decoded the one exact way."""
    if text is None and image is None:
        raise ValueError("give a text query, an image query, or both")
    device = next(model.parameters()).device
    parts = []
    if text is not None:
        from clipforge.encode import encode_texts

        parts.append(encode_texts(model, [text])[0])
    if image is not None:
        if preprocess is None:
            raise ValueError("an image query needs the model's preprocess")
        if not isinstance(image, Image.Image):
            image = open_image(image)
        parts.append(model.encode_image(preprocess(image)[None].to(device), normalize=True)[0].float().cpu())
    vector = torch.stack(parts).sum(0)
    return torch.nn.functional.normalize(vector, dim=0).numpy()


def search(index: SearchIndex, model, preprocess=None, *, text=None, image=None, k: int = 10) -> list[Hit]:
    """Python API: one query (text / image: PIL, path or bytes / both) -> top-k hits."""
    return index.search(query_embedding(model, preprocess, text=text, image=image), k)[0]
