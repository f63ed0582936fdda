"""Inputs an app could not use: every skipped file is recorded with its reason, counted, and written to a
file beside the outputs; a run that processed nothing at all is an error, not an empty success."""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from clipforge.fileio import atomic_write_text

COLUMNS = ("path", "reason", "error")


class NothingProcessedError(ValueError):
    """No input could be used; the message gives the counts by reason and where the list is."""


def reason_of(error: BaseException) -> str:
    """The error's `reason` -- decode reasons 'missing' | 'unreadable' | 'format' | 'mode' | 'too_large', or a
    table reader's ('bad_json', 'extra_fields', 'unbalanced_quote', ...) -- else 'unreadable'."""
    if isinstance(error, FileNotFoundError):
        return "missing"
    return getattr(error, "reason", None) or "unreadable"


@dataclass
class Skipped:
    rows: list[dict] = field(default_factory=list)  # {"path", "reason", "error", ...extra metadata}

    def add(self, path: str | os.PathLike, error: BaseException, **extra) -> None:
        self.rows.append({"path": os.fspath(path), "reason": reason_of(error), "error": str(error), **extra})

    def extend(self, rows: list[dict]) -> None:
        self.rows.extend(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        return dict(Counter(row["reason"] for row in self.rows).most_common())

    def summary(self) -> str:
        """'3 skipped (2 unreadable, 1 too_large)' or 'none skipped'."""
        if not self.rows:
            return "none skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.counts().items())
        return f"{len(self.rows)} skipped ({parts})"

    def write_csv(self, path: str | os.PathLike) -> Path:
        """path, reason, error per skipped input (a header only when none was skipped)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        return atomic_write_text(path, buffer.getvalue())

    def raise_if_all(self, total: int, what: str, listed_in: str | os.PathLike | None = None) -> None:
        """NothingProcessedError when every one of `total` inputs was skipped."""
        if total and len(self.rows) >= total:
            where = f"; the list is in {os.fspath(listed_in)}" if listed_in else ""
            first = self.rows[0]["error"]
            raise NothingProcessedError(
                f"none of the {total} {what} could be used: {self.summary()}{where}; first: {first}"
            )


def skipped_file_for(output: str | os.PathLike) -> Path:
    """`preds.csv` -> `preds.skipped.csv`: the skip list beside an output file."""
    output = Path(output)
    return output.with_name(f"{output.stem}.skipped.csv")
