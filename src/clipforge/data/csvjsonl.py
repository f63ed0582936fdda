"""Caption/label tables: CSV, TSV and JSONL rows of (image path, caption[, label]) -> `Record`s.

Column names are configurable; relative image paths resolve against the table's own folder (or `root`).
A missing table or column is a `DataSourceError` naming file, line and field; a bad row is skipped and counted.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

from clipforge.data.errors import BAD_LABEL, MISSING_FIELD, DataSourceError, SkipCounter
from clipforge.data.records import Record


def _open_text(path: Path, newline: str | None = None):
    """Text reader for a table, gzip-compressed when the name ends in .gz; undecodable bytes survive as
    surrogates (so one bad caption is counted, not fatal)."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape", newline=newline)
    return open(path, encoding="utf-8", errors="surrogateescape", newline=newline)


def table_rows(path: Path, delimiter: str | None):
    """(line number, dict) per data row; the format follows the extension (.jsonl/.ndjson lines, .tsv/.tab,
    else CSV), optionally gzipped (.jsonl.gz, .csv.gz, ...)."""
    name = path.name.lower()
    suffix = Path(name[:-3] if name.endswith(".gz") else name).suffix
    if suffix in (".jsonl", ".ndjson"):
        with _open_text(path) as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataSourceError(path, f"invalid JSON: {e.msg}", line=line_number) from e
                if not isinstance(row, dict):
                    raise DataSourceError(path, "each line must be a JSON object", line=line_number)
                yield line_number, row
        return
    delimiter = delimiter or ("\t" if suffix in (".tsv", ".tab") else ",")
    with _open_text(path, newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if reader.fieldnames is None:
            raise DataSourceError(path, "empty table: no header row", line=1)
        for row in reader:
            yield reader.line_num, row


def table_columns(path: str | Path, delimiter: str | None = None) -> list[str]:
    """The columns of a table (its header; for JSONL the keys of the first row)."""
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(path, "table file not found")
    for _, row in table_rows(path, delimiter):
        return list(row)
    raise DataSourceError(path, "table has a header but no rows")


def read_table(
    path: str | Path,
    image_column: str = "path",
    caption_column: str | None = "caption",
    label_column: str | None = None,
    root: str | Path | None = None,
    delimiter: str | None = None,
    skips: SkipCounter | None = None,
    split: str | None = None,
    split_column: str = "split",
) -> list[Record]:
    """Records from a CSV/TSV/JSONL table; rows lacking a value are skipped and counted in `skips`.

    `split`: keep only rows whose `split_column` equals it (the column must exist); None keeps every row.
    Each record's key is `<file name>:<line>`, which names it in skip counts and logs."""
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(path, "table file not found")
    root = Path(root) if root is not None else path.parent
    skips = skips if skips is not None else SkipCounter()
    wanted = [c for c in (image_column, caption_column, label_column) if c]
    wanted += [split_column] if split is not None else []
    records, checked, splits_seen = [], False, set()
    for line, row in table_rows(path, delimiter):
        if not checked:
            _check_columns(path, line, row, wanted)
            checked = True
        if split is not None:
            splits_seen.add(row.get(split_column))
            if row.get(split_column) != split:
                continue
        record = _row_record(path, line, row, image_column, caption_column, label_column, root, skips)
        if record is not None:
            records.append(record)
    if not checked:
        raise DataSourceError(path, "table has a header but no rows")
    if split is not None and split not in splits_seen:
        raise DataSourceError(
            path,
            f"no row has split {split!r}; splits are {sorted(map(str, splits_seen))}",
            field=split_column,
        )
    return records


def _check_columns(path: Path, line: int, row: dict, wanted: list[str]) -> None:
    for column in wanted:
        if column not in row:
            raise DataSourceError(path, f"column missing; columns are {sorted(row)}", line=line, field=column)


def _row_record(path, line, row, image_column, caption_column, label_column, root, skips) -> Record | None:
    """The row as a `Record`, or None (counted in `skips`) when its image or label is unusable."""
    image = row.get(image_column)
    if not image:
        skips.add(MISSING_FIELD, f"{path}:{line}: empty {image_column!r}")
        return None
    label = None
    if label_column:
        value = str(row.get(label_column, "")).strip()
        if not value.lstrip("-").isdigit():
            skips.add(BAD_LABEL, f"{path}:{line}: {label_column}={value!r}")
            return None
        label = int(value)
    caption = row.get(caption_column) if caption_column else None
    if isinstance(caption, str):  # undecodable bytes survive as surrogates; keep them as bytes for the check
        caption = caption.encode("utf-8", "surrogateescape")
    image_path = Path(image) if Path(image).is_absolute() else root / image
    return Record(image_path, caption, label, key=f"{path.name}:{line}")
