"""Matplotlib for every PNG the project writes: figures without pyplot, so no global backend is selected
(`matplotlib.use` would change the backend of the user's whole process), and one way to save."""

from __future__ import annotations

import os
from pathlib import Path


class _Figures:
    """The part of pyplot the project uses, on plain `matplotlib.figure.Figure`s (PNG via Agg at save time)."""

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, dpi=None, **subplot_kwargs):
        from clipforge.extras import require

        require("matplotlib", "writing PNG plots")
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, dpi=dpi)
        return fig, fig.subplots(nrows, ncols, **subplot_kwargs)


def pyplot() -> _Figures:
    """`subplots(...)` -> (figure, axes), as pyplot's, without touching pyplot's global state."""
    return _Figures()


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Write `fig` to `path` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **savefig_kwargs)
    return path
