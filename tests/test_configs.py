"""Every YAML under configs/ loads into its config class and passes validation (a typo there fails here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipforge.overrides import load_config
from clipforge.recipes.demo import DemoConfig
from clipforge.train import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
DEMO_CONFIGS = {"demo.yaml"}  # `clipforge demo --config`; every other file is a `clipforge train --config`


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_validates(path):
    if path.name in DEMO_CONFIGS:
        assert isinstance(load_config(DemoConfig, path), DemoConfig)
        return
    config = load_config(TrainConfig, path).validate()
    if config.data.path is not None:  # relative to the repository root, like the commands' documentation
        assert (path.parents[1] / config.data.path).exists(), config.data.path
