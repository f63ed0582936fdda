"""PNG plots leave the process's matplotlib state alone: no backend switch, no pyplot figures left open."""

from __future__ import annotations

import subprocess
import sys


def test_drawing_a_png_changes_no_global_matplotlib_state(tmp_path):
    script = f"""
import matplotlib
backend = matplotlib.rcParams._get_backend_or_none()  # None: not chosen yet (get_backend() would choose one)
from clipforge.figures import pyplot, save_figure
fig, axes = pyplot().subplots(1, 2, figsize=(4, 2))
axes[0].plot([0, 1], [1, 0])
path = save_figure(fig, {str(tmp_path / "plot.png")!r}, dpi=50)
import sys
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
assert matplotlib.rcParams._get_backend_or_none() == backend, matplotlib.rcParams._get_backend_or_none()
print(path.stat().st_size)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) > 1000 and (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
