"""Evaluation reports: JSON (CLIP_benchmark-compatible keys), a Markdown table and PNG plots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from clipforge.figures import pyplot, save_figure
from clipforge.results import markdown_table, write_results


def write_report(
    out_dir: str | os.PathLike,
    name: str,
    results: dict[str, Any],
    rows: list[dict],
    title: str,
    columns: list[str] | None = None,
) -> dict[str, str]:
    """`<name>.json` holds `results`; `<name>.md` a title and the table of `rows`."""
    summary = f"# {title}\n\n" + markdown_table(rows, columns)
    return write_results(out_dir, name, results, summary)


def plot_bars(rows: list[dict], models: list[str], path: str | os.PathLike, title: str, ylabel: str) -> Path:
    """Grouped bars: one group per row["dataset"], one bar per model column."""
    plt = pyplot()

    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 4), dpi=120)
    for j, model in enumerate(models):
        values = [r.get(model) if isinstance(r.get(model), (int, float)) else 0.0 for r in rows]
        ax.bar([i + j * width for i in range(len(rows))], values, width, label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(rows))], [r["dataset"] for r in rows])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
