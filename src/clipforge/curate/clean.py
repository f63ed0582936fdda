"""Cleaning: caption sanity checks, image checks, exact and near duplicates, image-text similarity.

Every check returns a drop *reason* (a short tag) or None, so the pipeline can count each drop.
Duplicates are judged against pairs already *kept* (first one wins, in input order):

* exact: blake2b of the image bytes, and of the normalised caption (each switchable);
* near: a 256-d "thumbnail" embedding (grey 16x16, mean removed, unit norm) searched with faiss
  (inner product = cosine). Re-encoded, resized or lightly cropped copies of a photo score >= 0.95
  while distinct COCO photos stay below (docs/curation.md has the measured distributions);
* similarity: optional, cosine of a clipforge model's image and text embeddings below a threshold
  (LAION used 0.28 with OpenAI ViT-B/32; a threshold only means something for a trained model).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import regex
from PIL import Image

from clipforge.curate.matcher import normalize_text
from clipforge.decode import ImageError, exif_orientation, open_image
from clipforge.transforms import to_rgb

THUMB_SIDE = 16
_NOT_ASCII_LETTER = re.compile(r"[^A-Za-z]+")
_NOT_LETTER = regex.compile(r"[^\p{L}\p{M}]+")


@dataclass(frozen=True)
class CleanConfig:
    min_caption_chars: int = 5
    max_caption_chars: int = 1000
    min_caption_words: int = 2  # word = run of letters/digits; ignored for scripts without spaces
    min_letter_fraction: float = 0.5  # letters (any script) / non-space characters
    max_char_repeat_fraction: float = 0.5  # most frequent character / non-space characters
    min_image_side: int = 32
    dedup_images: bool = True
    dedup_captions: bool = True
    near_dup_threshold: float | None = 0.95  # None turns near-duplicate removal off
    min_similarity: float | None = None  # needs a scorer


def digest64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def caption_problem(caption: str | None, config: CleanConfig, normalised: str | None = None) -> str | None:
    """Language-agnostic sanity: length, enough letters of any script, not one character repeated.
    Pass `normalised` (= normalize_text(caption)) when it is already at hand, to skip recomputing it."""
    if caption is None:
        return "caption_empty"
    text = caption.strip()
    if not text:
        return "caption_empty"
    if len(text) < config.min_caption_chars:
        return "caption_too_short"
    if len(text) > config.max_caption_chars:
        return "caption_too_long"
    visible = "".join(text.split())
    if not visible.isascii() and not _encodable(visible):
        return "caption_undecodable"  # bytes that were not UTF-8 (kept as surrogates by the reader)
    letters = _NOT_ASCII_LETTER if visible.isascii() else _NOT_LETTER  # stdlib re is 10x faster on ASCII
    if len(letters.sub("", visible)) < config.min_letter_fraction * len(visible):
        return "caption_not_text"
    if _most_repeated(visible, config.max_char_repeat_fraction) > config.max_char_repeat_fraction * len(
        visible
    ):
        return "caption_repetitive"
    words = (normalize_text(text) if normalised is None else normalised).count(" ") + 1
    if words < config.min_caption_words and not _unspaced_script(text):
        return "caption_too_short"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _most_repeated(visible: str, fraction: float) -> int:
    """Count of the most frequent character; for fraction >= 0.5 only a majority matters, and a
    majority character is the median of the sorted characters (cheaper than counting them all)."""
    if fraction >= 0.5:
        return visible.count(sorted(visible)[len(visible) // 2])
    return Counter(visible).most_common(1)[0][1]


def _unspaced_script(text: str) -> bool:
    """True for CJK / Thai-like text where one 'word' can be a whole sentence."""
    return any(
        0x3040 <= ord(c) <= 0x9FFF or 0x0E00 <= ord(c) <= 0x0E7F or 0xAC00 <= ord(c) <= 0xD7AF for c in text
    )


@dataclass
class CheckedImage:
    jpeg: bytes
    width: int
    height: int
    thumbnail: np.ndarray  # (THUMB_SIDE**2,) float32, unit norm (or zeros for a flat image)


def check_image(data: bytes, config: CleanConfig) -> tuple[str | None, CheckedImage | None]:
    """Decode once (clipforge.decode: limits, EXIF orientation): (reason, None) for unusable bytes, else
    (None, JPEG bytes + thumbnail embedding). A JPEG is kept byte for byte (its EXIF orientation with it);
    any other image is stored as the JPEG of exactly the RGB image the exact transform would see."""
    is_jpeg = data[:3] == b"\xff\xd8\xff"
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size  # before the draft decode below shrinks it
        # a JPEG decodes at 1/2..1/8 scale (DCT scaling): the whole stream is still read and checked
        image = open_image(data, draft_size=THUMB_SIDE * 8 if is_jpeg else None)
    except ImageError as error:
        return ("image_too_large" if error.reason == "too_large" else "image_unreadable"), None
    except Exception:  # PIL raises many types for broken headers; all mean the same here
        return "image_unreadable", None
    if exif_orientation(data) in (5, 6, 7, 8):  # stored rotated by a quarter turn
        width, height = height, width
    if min(width, height) < config.min_image_side:
        return "image_too_small", None
    rgb = to_rgb(image)
    if is_jpeg:
        jpeg = data
    else:
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=95)
        jpeg = buffer.getvalue()
    return None, CheckedImage(jpeg, width, height, thumbnail_embedding(rgb))


def thumbnail_embedding(image: Image.Image) -> np.ndarray:
    """(THUMB_SIDE**2,) grey thumbnail, mean removed, unit norm, of an RGB (or L) image."""
    grey = image.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    vector = np.asarray(grey, np.float32).reshape(-1)
    vector = vector - vector.mean()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-6 else np.zeros_like(vector)


class Deduplicator:
    """Remembers kept pairs; `reason` says why a new pair duplicates one, `keep` registers it."""

    def __init__(self, config: CleanConfig, dim: int = THUMB_SIDE**2):
        import faiss

        self.config = config
        self.image_hashes: set[int] = set()
        self.caption_hashes: set[int] = set()
        self.index = faiss.IndexFlatIP(dim)

    def reason(self, image_hash: int, caption_hash: int, embedding: np.ndarray) -> str | None:
        """Why this pair duplicates a kept one, or None. Exact checks first, then faiss nearest neighbour."""
        if self.config.dedup_images and image_hash in self.image_hashes:
            return "duplicate_image"
        if self.config.dedup_captions and caption_hash in self.caption_hashes:
            return "duplicate_caption"
        threshold = self.config.near_dup_threshold
        if threshold is not None and self.index.ntotal and np.any(embedding):
            scores, _ = self.index.search(embedding.reshape(1, -1).astype(np.float32), 1)
            if scores[0, 0] >= threshold:
                return "near_duplicate_image"
        return None

    def keep(self, image_hash: int, caption_hash: int, embedding: np.ndarray) -> None:
        self.image_hashes.add(image_hash)
        self.caption_hashes.add(caption_hash)
        if self.config.near_dup_threshold is not None and np.any(embedding):
            self.index.add(embedding.reshape(1, -1).astype(np.float32))


Scorer = Callable[[Sequence[bytes], Sequence[str]], np.ndarray]


class ClipSimilarity:
    """Image-text cosine similarity under a clipforge model: `scorer(jpegs, captions) -> (N,)`."""

    def __init__(self, model, preprocess, batch_size: int = 64):
        self.model, self.preprocess, self.batch_size = model.eval(), preprocess, batch_size

    def __call__(self, jpegs: Sequence[bytes], captions: Sequence[str]) -> np.ndarray:
        import torch

        from clipforge.encode import encode_texts

        with torch.inference_mode():
            text = encode_texts(self.model, list(captions), batch_size=self.batch_size, normalize=True)
            images = torch.stack([self.preprocess(open_image(j)) for j in jpegs])
            image = torch.cat(
                [self.model.encode_image(chunk, normalize=True) for chunk in images.split(self.batch_size)]
            )
        return (image.float() * text.float()).sum(-1).numpy()
