"""Training state files: everything needed to continue a run bit-exactly, written atomically.

A state file is `torch.save` of a dict of tensors and plain Python values (loadable with weights_only=True):
model, optimizer, schedule and scaler states, every RNG state of every rank, the step, the epoch, the sample
offset inside it and (mid-epoch) every rank's loader `state_dict()`, the best metric so far, and the effective
TrainConfig as a nested dict.
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipforge.fileio import atomic_write

STATE_FORMAT = "clipforge-train-state"
STATE_VERSION = 2  # 2: loader states (the one loader protocol) under "data"
STEP_FILE = re.compile(r"^step_(\d{8,})\.pt$")


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch CPU and every CUDA generator, as weights_only-loadable values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A run saved with more visible GPUs than this machine has: restore the generators of those
        # visible (each rank draws on its own device, cuda:LOCAL_RANK, which exists or init would fail).
        for index, generator_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(generator_state, index)


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomic: a crash mid-write leaves the previous file set intact, never a torn file."""
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, **state}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a clipforge training state (format != {STATE_FORMAT!r})")
    if state["version"] > STATE_VERSION:
        raise ValueError(
            f"{path}: state version {state['version']} is newer than this clipforge ({STATE_VERSION})"
        )
    return state


class CheckpointManager:
    """step_XXXXXXXX.pt files in `folder`: keeps the newest `keep_last`, plus best.pt (a copy) when improved."""

    def __init__(self, folder: str | Path, keep_last: int = 2):
        self.folder, self.keep_last = Path(folder), keep_last

    def step_files(self) -> list[Path]:
        """Oldest first."""
        if not self.folder.is_dir():
            return []
        files = [p for p in self.folder.iterdir() if STEP_FILE.match(p.name)]
        return sorted(files, key=lambda p: int(STEP_FILE.match(p.name).group(1)))

    def save(self, step: int, state: dict[str, Any], is_best: bool = False) -> Path:
        path = save_state(self.folder / f"step_{step:08d}.pt", state)
        if is_best:
            best = self.folder / "best.pt"
            atomic_write(best, lambda f: f.write(path.read_bytes()))
        for old in self.step_files()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest state file that loads; unreadable ones are skipped with a warning."""
        for path in reversed(self.step_files()):
            try:
                return path, load_state(path)
            except Exception as error:  # a truncated file from an old non-atomic writer, a bad disk, ...
                warnings.warn(f"{path}: skipped unreadable checkpoint ({error})", stacklevel=2)
        return None
