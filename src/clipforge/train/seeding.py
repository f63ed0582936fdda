"""Seeding and deterministic mode for one `fit` call, undone when it returns.

`fit` seeds Python, NumPy and torch and may switch on deterministic algorithms; `global_state_restored()` puts
all of it back afterwards (RNG states, `torch.use_deterministic_algorithms`, `cudnn.benchmark`), so training
leaves no trace on the caller's process.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from clipforge.train.state import capture_rng, restore_rng


def seed_everything(seed: int, deterministic: bool, device: torch.device | str = "cpu") -> None:
    """Seeds every generator. `deterministic`: only deterministic kernels. On CUDA that is strict (an op
    without a deterministic kernel is an error, not a warning: bit-exact resume depends on it) and cuBLAS gets
    the fixed workspace it needs (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS starts: set it yourself if CUDA
    ran in this process before fit)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        on_cuda = torch.device(device).type == "cuda"
        if on_cuda:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=not on_cuda)
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def global_state_restored() -> Iterator[None]:
    """Restore every RNG and the deterministic-mode flags on exit (normal or not)."""
    rng = capture_rng()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        restore_rng(rng)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
