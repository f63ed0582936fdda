"""Caption/label tables: CSV, TSV and JSONL rows of (image path, caption[, label]) -> `Record`s.

Column names are configurable; relative image paths resolve against the table's own folder (or `root`).
A missing table or column is a `DataSourceError` naming file, line and field; a bad row is skipped and counted.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable
from pathlib import Path

from clipforge.data.errors import (
    BAD_JSON,
    BAD_LABEL,
    EXTRA_FIELDS,
    MISSING_FIELD,
    UNBALANCED_QUOTE,
    DataSourceError,
    SkipCounter,
)
from clipforge.data.records import Record


def _open_text(path: Path, newline: str | None = None):
    """Text reader for a table, gzip-compressed when the name ends in .gz; a UTF-8 byte-order mark (Excel's
    "CSV UTF-8") is dropped, undecodable bytes survive as surrogates (so one bad caption is counted, not
    fatal), and a UTF-16 file -- which would decode as noise -- is refused naming the file."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as raw:
        head = raw.read(2)
    if head in (b"\xff\xfe", b"\xfe\xff"):
        raise DataSourceError(path, "is UTF-16 text; save it as UTF-8 (in Excel: CSV UTF-8)")
    if opener is gzip.open:
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline=newline)
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline=newline)


BadRow = Callable[[int, str, str], None]  # (line, reason, message) for a row that is skipped


def _raise_bad_row(path: Path) -> BadRow:
    def on_bad_row(line: int, reason: str, message: str) -> None:
        raise DataSourceError(path, message, line=line)

    return on_bad_row


def table_rows(path: Path, delimiter: str | None, on_bad_row: BadRow | None = None):
    """(line number, dict) per data row; the format follows the extension (.jsonl/.ndjson lines, .tsv/.tab,
    else CSV), optionally gzipped (.jsonl.gz, .csv.gz, ...). The line is where the row starts.

    A malformed row -- invalid JSON or not an object (JSONL); more fields than the header, or a quote that
    opens and swallows the following rows (CSV) -- goes to `on_bad_row(line, reason, message)` and is
    skipped; without a callback it raises DataSourceError naming file and line."""
    path = Path(path)
    on_bad_row = on_bad_row or _raise_bad_row(path)
    name = path.name.lower()
    suffix = Path(name[:-3] if name.endswith(".gz") else name).suffix
    if suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path, on_bad_row)
        return
    delimiter = delimiter or ("\t" if suffix in (".tsv", ".tab") else ",")
    with _open_text(path, newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            if reader.fieldnames is None:
                raise DataSourceError(path, "empty table: no header row", line=1)
            previous_end = reader.line_num
            for row in reader:
                first, previous_end = previous_end + 1, reader.line_num
                problem = _csv_row_problem(row, delimiter, len(reader.fieldnames), first, reader.line_num)
                if problem is None:
                    yield first, row
                else:
                    on_bad_row(first, *problem)
        except csv.Error as error:
            raise DataSourceError(path, f"malformed CSV ({error})", line=reader.line_num) from None


def _jsonl_rows(path: Path, on_bad_row: BadRow):
    with _open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                on_bad_row(line_number, BAD_JSON, f"invalid JSON: {e.msg}")
                continue
            if not isinstance(row, dict):
                on_bad_row(line_number, BAD_JSON, "each line must be a JSON object")
                continue
            yield line_number, row


def _csv_row_problem(
    row: dict, delimiter: str, num_columns: int, first: int, last: int
) -> tuple[str, str] | None:
    """(reason, message) for a CSV row that cannot be what the file meant, else None."""
    if None in row:  # DictReader puts fields beyond the header under the key None
        extra = len(row[None])
        return EXTRA_FIELDS, (
            f"{num_columns + extra} fields, the header has {num_columns} (an unquoted {delimiter!r} in a value?)"
        )
    for value in row.values():
        if isinstance(value, str) and "\n" in value and delimiter in value.split("\n", 1)[1]:
            return UNBALANCED_QUOTE, (
                f"a quote opened on line {first} runs to line {last}, swallowing the rows between; close it, "
                'or write a literal quote as ""'
            )
    return None


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

    def bad_row(line: int, reason: str, message: str) -> None:
        skips.add(reason, f"{path}:{line}: {message}")

    for line, row in table_rows(path, delimiter, bad_row):
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
        if skips.total:
            raise DataSourceError(path, f"no usable row: {skips.summary()}; first: {_first_example(skips)}")
        raise DataSourceError(path, "table has a header but no rows")
    if split is not None and split not in splits_seen:
        raise DataSourceError(
            path,
            f"no row has split {split!r}; splits are {sorted(map(str, splits_seen))}",
            field=split_column,
        )
    if not records:
        raise DataSourceError(path, f"no usable row: {skips.summary()}; first: {_first_example(skips)}")
    return records


def _first_example(skips: SkipCounter) -> str:
    return next((shown[0] for shown in skips.examples.values() if shown), "")


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
