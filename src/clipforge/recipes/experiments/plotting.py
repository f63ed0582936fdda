"""Matplotlib (Agg) figures for the experiments."""

from __future__ import annotations

from pathlib import Path

from clipforge.figures import pyplot, save_figure


def plot_curves(curves: dict[str, list[dict]], chance: float, title: str, path: Path) -> Path:
    """One line per objective: images seen (x) vs validation top-1 (y)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot([p["images_seen"] for p in curve], [p["val_top1"] for p in curve], marker="o", label=name)
    ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set(xlabel="images seen", ylabel="zero-shot top-1 (validation)", title=title)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_bars(groups: list[str], series: dict[str, list[float]], ylabel: str, title: str, path: Path) -> Path:
    """Grouped bars: one group per entry of `groups`, one bar per series."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) * len(series)), 4))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=name)
    ax.set_xticks(
        [g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups, rotation=30, ha="right"
    )
    ax.set(ylabel=ylabel, title=title)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_scatter(points: list[dict], x: str, y: str, title: str, path: Path) -> Path:
    """Effective-robustness plot: each shifted set as a point, the y = x line for reference."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="y = x")
    for point in points:
        ax.scatter(point[x], point[y])
        ax.annotate(point["dataset"], (point[x], point[y]), fontsize=7)
    ax.set(xlabel=x, ylabel=y, title=title, xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_probe(rows: list[dict], shots: tuple[int, ...], title: str, path: Path) -> Path:
    """One panel per set: the k-shot probe's top-1 (`probe_k` columns) vs k, zero-shot as a dashed line."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), squeeze=False)
    for ax, row in zip(axes[0], rows):
        points = [(k, row[f"probe_{k}"]) for k in shots if row.get(f"probe_{k}") is not None]
        if points:
            ax.plot([k for k, _ in points], [a for _, a in points], marker="o", label="linear probe")
        ax.axhline(row["zeroshot"], color="C1", linestyle="--", label="zero-shot")
        ax.axhline(1 / row["classes"], color="grey", linestyle=":", label="chance")
        ax.set_xscale("log", base=2)
        ax.set(title=row["set"], xlabel="shots per class", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 (test)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path, dpi=120, bbox_inches="tight")
