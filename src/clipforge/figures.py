"""Matplotlib for every PNG the project writes: the Agg backend (no display needed), one way to save."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported only when a figure is drawn."""
    from clipforge.extras import require

    matplotlib = require("matplotlib", "writing PNG plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Write `fig` to `path` (parent folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **savefig_kwargs)
    pyplot().close(fig)
    return path
