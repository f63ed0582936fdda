"""Every long job writes machine-readable JSON plus a human Markdown summary next to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clipforge.fileio import atomic_write_json, atomic_write_text


def markdown_table(
    rows: list[dict[str, Any]], columns: list[str] | None = None, floatfmt: str = ".4f"
) -> str:
    """Render dict rows as a GitHub Markdown table."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])

    def fmt(value: Any) -> str:
        return format(value, floatfmt) if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: str | os.PathLike, name: str, results: dict[str, Any], summary_md: str
) -> dict[str, str]:
    """Write `<name>.json` and `<name>.md` into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    json_path = atomic_write_json(out_dir / f"{name}.json", results)
    md_path = atomic_write_text(out_dir / f"{name}.md", summary_md)
    return {"json": str(json_path), "markdown": str(md_path)}
