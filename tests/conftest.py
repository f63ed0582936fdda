"""Shared fixtures. Tests run under pytest-xdist with one torch thread per worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("CLIPFORGE_TEST_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLIPFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the repo (../shared/data); CI always has it."""
    if not (SHARED_DATA / "cifar10").is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}; set CLIPFORGE_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def clip_assets(shared_data: Path) -> Path:
    return shared_data / "clip_assets"
