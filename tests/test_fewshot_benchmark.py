"""benchmarks/fewshot_curve: the issue's checks by hand, and the smoke run end to end on shared images."""

from __future__ import annotations

import json

import pytest

from benchmarks.fewshot_curve import check_all, check_set, main
from benchmarks.fewshot_sets import capped, stratified


def curve(zeroshot, rows):
    return {
        "zeroshot": {"acc1": zeroshot},
        "rows": [{"method": m, "shots": k, "acc1_mean": mean, "acc1_std": std} for m, k, mean, std in rows],
    }


def test_checks_by_hand():
    good = curve(0.50, [("anchored", 1, 0.50, 0.0), ("anchored", 2, 0.51, 0.01), ("anchored", 8, 0.56, 0.02),
                        ("anchored", 16, 0.60, 0.02), ("linear_probe", 8, 0.55, 0.03),
                        ("linear_probe", 16, 0.62, 0.02)])  # fmt: skip
    assert check_set(good) == {
        "anchored>=zeroshot@1": True, "anchored>=zeroshot@2": True,
        "anchored>zeroshot+std@8": True, "linear_probe>zeroshot@8": True,
        "anchored>zeroshot+std@16": True, "linear_probe>zeroshot@16": True,
    }  # fmt: skip
    # 8 shots: above zero-shot, but by less than its seed spread; 1 shot: below zero-shot.
    weak = curve(
        0.50, [("anchored", 1, 0.49, 0.01), ("anchored", 8, 0.52, 0.03), ("anchored", 16, 0.60, 0.02)]
    )
    checks = check_set(weak)
    assert not checks["anchored>=zeroshot@1"] and not checks["anchored>zeroshot+std@8"]
    verdict = check_all({"a": check_set(good), "b": check_set(good), "c": checks})
    assert verdict["anchored>=zeroshot@1-2 on every set"] is False
    assert verdict["anchored>zeroshot+std@8,16 on >= 2 sets"] is True
    assert verdict["sets where anchored beats zero-shot by more than its seed spread at 8 and 16"] == [
        "a",
        "b",
    ]
    assert check_all({"a": check_set(good)})["anchored>zeroshot+std@8,16 on >= 2 sets"] is False


def test_pools_are_stratified_and_disjoint():
    samples = [(f"img{i}", i % 3) for i in range(30)]
    kept, rest = stratified(samples, 4, seed=0)
    assert sorted(label for _, label in kept) == [0] * 4 + [1] * 4 + [2] * 4
    assert not {p for p, _ in kept} & {p for p, _ in rest} and len(kept) + len(rest) == 30
    assert len(capped(samples, 9, seed=0)) == 9 and capped(samples, None, seed=0) == samples


def test_smoke_end_to_end(shared_data, tmp_path):
    if not (shared_data / "zeroshot" / "imagenette").is_dir():
        pytest.fail(f"{shared_data}/zeroshot/imagenette is missing (see ../shared/data/README.md)")
    result = main(["--smoke", "--out", str(tmp_path), "--data", str(shared_data), "--no-progress"])
    assert set(result["sets"]) == {"imagenette", "mnist"}
    for name in result["sets"]:
        saved = json.loads((tmp_path / f"fewshot_{name}_smoke.json").read_text())
        assert 0.0 <= saved["zeroshot"]["acc1"] <= 1.0 and saved["support_pool"] == 30
        assert len(saved["rows"]) == 2 * 6 and all(len(row["acc1_per_seed"]) == 2 for row in saved["rows"])
        assert (tmp_path / f"fewshot_{name}_smoke.png").stat().st_size > 10_000
    assert result["sets"]["mnist"]["support_source"] == "test (held out)"
    summary = (tmp_path / "fewshot_summary_smoke.md").read_text()
    assert "Reproduce: `python -m benchmarks.fewshot_curve --smoke" in summary
