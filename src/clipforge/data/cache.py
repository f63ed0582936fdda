"""Decode-once image cache: shards or files -> one (N, H, W, 3) uint8 `.npy` on disk, keyed by a hash of the inputs.

Decoding runs one process per shard (or per chunk of files); every run, the first included, then memory-maps
the saved array, so training reads pixels from the page cache instead of holding its own copy.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from clipforge.data.errors import BAD_LABEL, MISSING_FIELD, SkipCounter, SkipSample
from clipforge.data.records import Record, decode_caption, decode_image
from clipforge.data.tarshards import expand_shards, iter_shard, shard_fingerprint
from clipforge.fileio import atomic_write, atomic_write_json

CACHE_VERSION = 2
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp")
CAPTION_KEYS = ("txt", "caption")


@dataclass
class CachedImages:
    """Decoded samples: images (N, H, W, 3) uint8, labels (N,) int64 (-1 when unknown), optional captions."""

    images: np.ndarray
    labels: np.ndarray
    keys: list[str]
    captions: list[str] | None = None
    skips: SkipCounter = field(default_factory=SkipCounter)
    path: Path | None = None
    class_names: dict[int, str] = field(default_factory=dict)  # from the shards' .json `class_name`, if any

    def __len__(self) -> int:
        return len(self.images)


def default_cache_dir() -> Path:
    return Path(os.environ.get("CLIPFORGE_CACHE", Path.home() / ".cache" / "clipforge")) / "images"


def fit_square(array: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size` (bicubic), centre crop to (size, size); no-op when already that size."""
    height, width = array.shape[:2]
    if height == size and width == size:
        return array
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = Image.fromarray(array).resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def _pick(sample: dict, names: tuple[str, ...]) -> bytes | None:
    return next((sample[n] for n in names if n in sample), None)


def sample_image_bytes(sample: dict, key: str) -> bytes:
    """The encoded image of a WebDataset sample; SkipSample when it has none."""
    data = _pick(sample, IMAGE_KEYS)
    if data is None:
        raise SkipSample(MISSING_FIELD, f"{key}: no image member ({'/'.join(IMAGE_KEYS)})")
    return data


def sample_label(sample: dict, key: str) -> int:
    """The sample's `.cls` label, -1 when absent; SkipSample when it is not an integer."""
    if "cls" not in sample:
        return -1
    text = sample["cls"].decode("ascii", "replace").strip()
    if not text.lstrip("-").isdigit():
        raise SkipSample(BAD_LABEL, f"{key}: .cls {text!r}")
    return int(text)


def decode_shard(path: str, image_size: int | None, want_captions: bool) -> dict:
    """All samples of one shard -> arrays; bad samples are skipped and counted (runs in a worker process)."""
    images, labels, keys, captions, skips, names = [], [], [], [], SkipCounter(), {}
    for _, sample in iter_shard(Path(path)):
        key = f"{Path(path).name}/{sample['__key__']}"
        try:
            data = sample_image_bytes(sample, key)
            label = sample_label(sample, key)
            if label >= 0:
                names.setdefault(label, _class_name(sample.get("json")))
            caption = decode_caption(_pick(sample, CAPTION_KEYS), key) if want_captions else None
            array = decode_image(data, key)
        except SkipSample as skip:
            skips.add(skip.reason, skip.detail)
            continue
        if image_size is not None:
            array = fit_square(array, image_size)
        images.append(array)
        labels.append(label)
        keys.append(key)
        captions.append(caption)
    return _chunk(images, labels, keys, captions, skips, image_size, names)


def _class_name(data: bytes | None) -> str | None:
    try:
        name = json.loads(data).get("class_name") if data else None
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _chunk(images, labels, keys, captions, skips, image_size, names=None) -> dict:
    stacked = np.stack(images) if images else np.zeros((0, image_size or 1, image_size or 1, 3), np.uint8)
    names = {k: v for k, v in (names or {}).items() if v}
    return {
        "images": stacked,
        "labels": labels,
        "keys": keys,
        "captions": captions,
        "skips": skips,
        "names": names,
    }


def decode_records_chunk(records: list[Record], image_size: int | None, want_captions: bool) -> dict:
    """Decode a list of `Record`s (runs in a worker process); bad samples are skipped and counted."""
    images, labels, keys, captions, skips = [], [], [], [], SkipCounter()
    for record in records:
        try:
            caption = decode_caption(record.caption, record.key) if want_captions else None
            array = decode_image(record.image, record.key)
        except SkipSample as skip:
            skips.add(skip.reason, skip.detail)
            continue
        images.append(fit_square(array, image_size) if image_size is not None else array)
        labels.append(-1 if record.label is None else record.label)
        keys.append(record.key)
        captions.append(caption)
    return _chunk(images, labels, keys, captions, skips, image_size)


def _run_parallel(function, jobs: list[tuple], num_workers: int, progress: bool, desc: str) -> list[dict]:
    if num_workers <= 1 or len(jobs) == 1:
        return [function(*job) for job in tqdm(jobs, desc=desc, disable=not progress)]
    # fork: works from scripts without a `__main__` guard; the children only run numpy/PIL code
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(min(num_workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(function, *job) for job in jobs]
        return [f.result() for f in tqdm(futures, desc=desc, disable=not progress)]


def _merge(results: list[dict], want_captions: bool) -> CachedImages:
    shapes = {r["images"].shape[1:] for r in results if len(r["images"])}
    if len(shapes) > 1:
        raise ValueError(f"images decode to different shapes {sorted(shapes)[:3]}; pass image_size to resize")
    skips, names = SkipCounter(), {}
    for r in results:
        skips.merge(r["skips"])
        names.update(r["names"])
    nonempty = [r["images"] for r in results if len(r["images"])] or [np.zeros((0, 1, 1, 3), np.uint8)]
    return CachedImages(
        np.concatenate(nonempty),
        np.asarray([label for r in results for label in r["labels"]], dtype=np.int64),
        [k for r in results for k in r["keys"]],
        [c for r in results for c in r["captions"]] if want_captions else None,
        skips,
        class_names=dict(sorted(names.items())),
    )


def _cache_key(shards: list[Path], image_size: int | None, want_captions: bool) -> str:
    tag = f"v{CACHE_VERSION}-s{image_size}-c{int(want_captions)}"
    return f"{shard_fingerprint(shards)[:24]}-{tag}"


def _save(folder: Path, result: CachedImages) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "labels.npy", lambda f: np.save(f, result.labels))
    meta = {
        "keys": result.keys, "captions": result.captions, "skips": result.skips.as_dict(), "count": len(result),
        "skip_examples": result.skips.examples,
        "class_names": {str(k): v for k, v in result.class_names.items()},
    }  # fmt: skip
    atomic_write_json(folder / "meta.json", meta)
    atomic_write(folder / "images.npy", lambda f: np.save(f, result.images))  # written last: marks completion


def _read_ahead(path: Path) -> None:
    """Ask the OS to read the file into its page cache in the background (one sequential read), so the first
    epoch's random rows do not each fault a page in from disk; the pages stay the OS's, not this process's.
    Only for files under a quarter of physical memory: a bigger cache would just evict itself."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if hasattr(os, "posix_fadvise") and path.stat().st_size < physical // 4:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


def _load(folder: Path) -> CachedImages:
    """The saved cache, images memory-mapped (copy-on-write): pages are read on first use and stay in the OS
    page cache, shared by every process that maps the file, instead of a private copy per process."""
    meta = json.loads((folder / "meta.json").read_text())
    _read_ahead(folder / "images.npy")
    images = np.load(folder / "images.npy", mmap_mode="c")
    skips = SkipCounter(meta["skips"])
    skips.examples = meta.get("skip_examples", {})
    return CachedImages(
        images, np.load(folder / "labels.npy"), meta["keys"], meta["captions"],
        skips, folder, {int(k): v for k, v in meta.get("class_names", {}).items()},
    )  # fmt: skip


def decode_shards(
    shards,
    image_size: int | None = None,
    want_captions: bool = False,
    num_workers: int = 2,
    progress: bool = True,
) -> CachedImages:
    """Decode every sample of the shards (in parallel, one process per shard), in shard order."""
    jobs = [(str(p), image_size, want_captions) for p in expand_shards(shards)]
    return _merge(_run_parallel(decode_shard, jobs, num_workers, progress, "decode shards"), want_captions)


def decode_records(
    records: list[Record], image_size: int | None = None, want_captions: bool = False, num_workers: int = 2,
    progress: bool = True, chunk_size: int = 2000,
) -> CachedImages:  # fmt: skip
    """Decode `Record`s in parallel chunks, in input order."""
    jobs = [
        (records[i : i + chunk_size], image_size, want_captions) for i in range(0, len(records), chunk_size)
    ]
    return _merge(
        _run_parallel(decode_records_chunk, jobs, num_workers, progress, "decode images"), want_captions
    )


def records_fingerprint(records: list[Record]) -> str:
    """sha256 over each record's file identity (path, size, mtime) or bytes, caption, label and key."""
    digest = hashlib.sha256()
    for r in records:
        if isinstance(r.image, bytes):
            digest.update(hashlib.sha256(r.image).digest())
        else:
            try:
                stat = os.stat(r.image)
                digest.update(f"{r.image}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            except OSError:
                digest.update(f"{r.image}|missing".encode())
        caption = r.caption.encode("utf-8", "surrogateescape") if isinstance(r.caption, str) else r.caption
        digest.update(b"|" + (caption or b"") + f"|{r.label}|{r.key}\n".encode())
    return digest.hexdigest()


def cached_records(
    records: list[Record], cache_dir: str | Path | None = None, image_size: int | None = None,
    want_captions: bool = False, num_workers: int = 2, progress: bool = True,
) -> CachedImages:  # fmt: skip
    """`decode_records`, saved under `cache_dir/<fingerprint>/` and reused while the files are unchanged."""
    tag = f"v{CACHE_VERSION}-s{image_size}-c{int(want_captions)}"
    folder = Path(cache_dir or default_cache_dir()) / f"files-{records_fingerprint(records)[:24]}-{tag}"
    if (folder / "images.npy").is_file() and (folder / "meta.json").is_file():
        return _load(folder)
    _save(folder, decode_records(records, image_size, want_captions, num_workers, progress))
    return _load(folder)  # mapped: the decoded copy is freed


def cached_shards(
    shards,
    cache_dir: str | Path | None = None,
    image_size: int | None = None,
    want_captions: bool = False,
    num_workers: int = 2,
    progress: bool = True,
) -> CachedImages:
    """`decode_shards`, saved under `cache_dir/<hash of shards>/` and reused while the shards are unchanged."""
    paths = expand_shards(shards)
    folder = Path(cache_dir or default_cache_dir()) / _cache_key(paths, image_size, want_captions)
    if (folder / "images.npy").is_file() and (folder / "meta.json").is_file():
        return _load(folder)
    _save(folder, decode_shards(paths, image_size, want_captions, num_workers, progress))
    return _load(folder)  # mapped: the decoded copy is freed
