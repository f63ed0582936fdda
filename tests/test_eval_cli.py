"""`clipforge eval ... --smoke` and `clipforge prompts` end to end; shift table and effective robustness."""

from __future__ import annotations

import json
import math

import pytest

from clipforge.commands import eval as eval_cmd
from clipforge.commands import prompts as prompts_cmd
from clipforge.evaluate.shift import effective_robustness, fit_trend, shift_table


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_CACHE_DIR", str(tmp_path / "cache"))


def test_zeroshot_and_shift_smoke(tmp_path, shared_data, monkeypatch):
    monkeypatch.setattr(eval_cmd, "SMOKE_DATA", shared_data)
    result = eval_cmd.main(["zeroshot", "--smoke", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "zeroshot_cifar10.json").read_text())
    assert saved["metrics"]["num_samples"] == 60 and saved["metrics"]["num_classes"] == 10
    assert 0 <= saved["metrics"]["acc1"] <= saved["metrics"]["acc5"] <= 1
    assert result["metrics"]["acc1"] == saved["metrics"]["acc1"]
    shift = eval_cmd.main(["shift", "--smoke", "--out", str(tmp_path)])
    assert shift["table"][0]["dataset"] == "cifar10" and (tmp_path / "shift.png").stat().st_size > 5_000


def test_retrieval_smoke(tmp_path, shared_data, monkeypatch):
    monkeypatch.setattr(eval_cmd, "SMOKE_DATA", shared_data)
    metrics = eval_cmd.main(["retrieval", "--smoke", "--out", str(tmp_path)])["metrics"]
    assert metrics["num_images"] == 20 and metrics["num_captions"] >= 100
    for key in ("image_retrieval_recall@5", "text_retrieval_recall@5"):
        assert 0 <= metrics[key] <= 1
    assert metrics["image_retrieval_recall@1"] <= metrics["image_retrieval_recall@10"]


def test_prompts_command(capsys):
    rows = prompts_cmd.main([])["datasets"]
    assert {r["dataset"]: r["classes"] for r in rows}["imagenet-r"] == 200
    assert prompts_cmd.main(["imagenet"])["templates"][0] == "a bad photo of a {}."


def test_effective_robustness_by_hand():
    # a single baseline at (id 0.5, ood 0.5): slope-one trend in logit space predicts ood = id
    trend = fit_trend([0.5], [0.5])
    assert math.isclose(effective_robustness(0.8, 0.9, trend), 0.1, abs_tol=1e-9)
    # two baselines on logit(ood) = logit(id) - 1
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    slope, intercept = fit_trend([sig(0.0), sig(2.0)], [sig(-1.0), sig(1.0)])
    assert math.isclose(slope, 1.0) and math.isclose(intercept, -1.0)
    rows = shift_table(
        {
            "A": {"imagenet": {"acc1": 0.6}, "imagenet-r": {"acc1": 0.3}},
            "B": {"imagenet": {"acc1": 0.6}, "imagenet-r": {"acc1": 0.5}},
        }  # fmt: skip
    )
    assert rows[0] == {"dataset": "imagenet", "A": 60.0, "B": 60.0}
    assert rows[1]["ER A"] == 0.0 and rows[1]["ER B"] == 20.0
