"""`clipforge experiment ... --smoke`: all three run end to end, write JSON + Markdown + PNG, share cached runs."""

from __future__ import annotations

import json

import pytest

from clipforge.commands.experiment import main
from clipforge.recipes.experiments.shifts import SEVERITIES, SHIFTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ~30 s on 2 quiet cores (four small trainings + 19 shifted evaluations): part of `make test`, so CI always
# runs the three smoke modes.


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("experiments")
    common = [
        "--smoke",
        "--no-progress",
        "--data",
        str(shared_data / "cifar10"),
        "--cache-dir",
        str(root / "cache"),
    ]
    return {
        name: main([name, *common, "--out", str(root / name)])
        for name in ("objectives", "prompts", "robustness")
    }


def _files_ok(results: dict) -> None:
    with open(results["files"]["json"], encoding="utf-8") as file:
        data = json.load(file)
    assert data["experiment"] == results["experiment"]
    with open(results["png"], "rb") as png:
        assert png.read(8) == PNG_MAGIC


def test_objectives_smoke(smoke_results):
    results = smoke_results["objectives"]
    _files_ok(results)
    assert [row["objective"] for row in results["final"]] == ["contrastive", "bag-of-words", "captioning"]
    seen = {row["images_seen"] for row in results["final"]}
    assert len(seen) == 1  # same compute budget in images
    assert all(0.0 <= row["test_top1"] <= 1.0 for row in results["final"])
    assert results["test_images"] == 100 and results["chance"] == pytest.approx(0.1)


def test_prompts_reuse_the_contrastive_run(smoke_results):
    results = smoke_results["prompts"]
    _files_ok(results)
    first = smoke_results["objectives"]["final"][0]
    assert results["run"]["images_seen"] == first["images_seen"]
    rows = {row["prompts"]: row for row in results["rows"]}
    assert rows["bare class name"]["test_gain_over_bare"] == 0.0
    assert rows["ImageNet ensemble (80)"]["templates"] == 80
    assert rows["training templates (12)"]["test_top1"] == pytest.approx(first["test_top1"])  # same scorer


def test_robustness_table(smoke_results):
    results = smoke_results["robustness"]
    _files_ok(results)
    rows = results["rows"]
    assert len(rows) == 1 + len(SHIFTS) * len(SEVERITIES)
    assert rows[0]["dataset"] == "clean test" and rows[0]["effective_robustness"] == pytest.approx(0.0)
    assert rows[0]["CLIP"] == pytest.approx(smoke_results["objectives"]["final"][0]["test_top1"])
    low, high = results["mean_over_shifts"]["effective_robustness_ci95"]
    assert low <= results["mean_over_shifts"]["effective_robustness"] <= high


def test_prompt_gains_carry_a_paired_interval(smoke_results):
    for row in smoke_results["prompts"]["rows"]:
        low, high = (float(x) for x in row["gain_ci95"].strip("[]").split(","))
        assert low - 1e-3 <= row["test_gain_over_bare"] <= high + 1e-3
