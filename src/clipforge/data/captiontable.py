"""Image–caption tables (CSV/TSV/JSONL, one row per caption, several rows per image) -> decoded images + captions.

E.g. `../shared/data/flickr8k/captions.csv` (`path,caption,image_id,caption_idx,split`, five rows per image).
Rows are grouped by image path; each image is decoded once into the uint8 cache (memory-mapped) and keeps the
list of its captions, from which `ImageCaptions` picks one per epoch. Bad rows (empty or non-UTF-8 caption, no
path) and bad images (missing, unreadable) are skipped and counted by reason with their `file:line`; a table
with nothing usable left is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipforge.data.cache import cached_records
from clipforge.data.captions import ImageCaptions, Tokenizer
from clipforge.data.csvjsonl import read_table, table_columns, table_rows
from clipforge.data.errors import DataSourceError, SkipCounter, SkipSample
from clipforge.data.labelled import LabelledArrays
from clipforge.data.records import Record, decode_caption


@dataclass
class CaptionTable:
    """One record per image (key: `file:line` of its first row) and the captions of each, in table order."""

    records: list[Record]
    captions: list[list[str]]
    skips: SkipCounter = field(default_factory=SkipCounter)


def read_caption_table(
    path: str | Path,
    split: str | None = None,
    image_column: str = "path",
    caption_column: str = "caption",
    split_column: str = "split",
    root: str | Path | None = None,
) -> CaptionTable:
    """Rows grouped by image. `split` keeps the rows of one split; a table that has a `split_column` must be
    given one (training on every split of such a table would silently include its validation images)."""
    path = Path(path)
    if split is None and split_column in table_columns(path):
        values = sorted({str(row.get(split_column)) for _, row in table_rows(path, None)})
        raise DataSourceError(
            path, f"the table has splits {values}: choose one (data.split=...)", field=split_column
        )
    skips = SkipCounter()
    rows = read_table(path, image_column, caption_column, root=root, skips=skips, split=split,
                      split_column=split_column)  # fmt: skip
    first: dict[Path, Record] = {}
    captions: dict[Path, list[str]] = {}
    for row in rows:
        try:
            text = decode_caption(row.caption, row.key)
        except SkipSample as skip:
            skips.add(skip.reason, skip.detail)
            continue
        first.setdefault(row.image, Record(row.image, None, None, row.key))
        captions.setdefault(row.image, []).append(text)
    if not first:
        raise DataSourceError(path, f"no usable caption rows{_split_note(split)}: {skips.summary()}")
    return CaptionTable(list(first.values()), [captions[image] for image in first], skips)


def _split_note(split: str | None) -> str:
    return f" in split {split!r}" if split is not None else ""


def open_caption_table(
    path: str | Path,
    split: str | None = None,
    image_size: int | None = None,
    context_length: int = 77,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    num_workers: int = 2,
    progress: bool = True,
    tokenizer: Tokenizer | None = None,
) -> tuple[LabelledArrays, ImageCaptions]:
    """A caption table decoded once: (images (N, S, S, 3) uint8 memory-mapped, labels -1; their captions).

    `image_size` resizes while decoding (shorter side + centre crop); needed when images differ in size.
    Pass both to `ArrayLoader(data, captions, sampler, augment)`; `data.skips` holds every skipped row/image."""
    table = read_caption_table(path, split)
    decoded = cached_records(table.records, cache_dir, image_size, num_workers=num_workers, progress=progress)
    by_key = {record.key: captions for record, captions in zip(table.records, table.captions, strict=True)}
    skips = SkipCounter()
    skips.merge(table.skips)
    skips.merge(decoded.skips)
    if len(decoded) == 0:
        raise DataSourceError(path, f"no usable image{_split_note(split)}: {skips.summary()}")
    decoded.labels = np.full(len(decoded), -1, dtype=np.int64)
    decoded.skips = skips
    data = LabelledArrays.from_arrays(decoded, [], source=f"table:{path}" + (f"[{split}]" if split else ""))
    captions = ImageCaptions([by_key[key] for key in decoded.keys], seed, context_length, tokenizer)
    return data, captions
