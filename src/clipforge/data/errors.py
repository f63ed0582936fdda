"""Errors for whole sources, and `SkipCounter` for single samples that are skipped (never fatal)."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

# Reasons a single sample is skipped; counters use these names as keys.
MISSING_FILE = "missing_file"
CORRUPT_IMAGE = "corrupt_image"
EMPTY_CAPTION = "empty_caption"
BAD_ENCODING = "non_utf8_caption"
MISSING_FIELD = "missing_field"
BAD_LABEL = "bad_label"
BAD_JSON = "bad_json"  # a JSONL line that is not a JSON object
EXTRA_FIELDS = "extra_fields"  # a CSV row with more fields than its header
UNBALANCED_QUOTE = "unbalanced_quote"  # a CSV quote that swallowed the rows after it


class DataSourceError(ValueError):
    """A whole source is missing or malformed; the message names the file, line and field at fault."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, field: str | None = None):
        where = str(path) + (f":{line}" if line is not None else "")
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {message}")
        self.path, self.line, self.field = str(path), line, field


class SkipSample(Exception):
    """Raised while reading one sample; the reader counts `reason` and moves on."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class SkipCounter:
    """Counts skipped samples by reason; picklable, mergeable (worker counts add up in the main process)."""

    def __init__(self, counts: dict[str, int] | None = None, max_examples: int = 5):
        self.counts: Counter[str] = Counter(counts or {})
        self.examples: dict[str, list[str]] = {}
        self.max_examples = max_examples
        self._lock = threading.Lock()

    def add(self, reason: str, example: str = "") -> None:
        with self._lock:
            self.counts[reason] += 1
            shown = self.examples.setdefault(reason, [])
            if example and len(shown) < self.max_examples:
                shown.append(example)

    def merge(self, other: SkipCounter | dict[str, int]) -> None:
        counts = other.counts if isinstance(other, SkipCounter) else other
        with self._lock:
            self.counts.update(counts)
            if isinstance(other, SkipCounter):
                for reason, shown in other.examples.items():
                    mine = self.examples.setdefault(reason, [])
                    mine.extend(shown[: max(0, self.max_examples - len(mine))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def summary(self) -> str:
        """One line for logs: `skipped 3 (corrupt_image=2, missing_file=1)`."""
        if not self.total:
            return "skipped 0"
        parts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return f"skipped {self.total} ({parts})"

    def __getstate__(self) -> dict:
        return {"counts": dict(self.counts), "examples": self.examples, "max_examples": self.max_examples}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["counts"], state["max_examples"])
        self.examples = state["examples"]

    def __repr__(self) -> str:
        return f"SkipCounter({self.as_dict()})"
