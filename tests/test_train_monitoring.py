"""Monitoring: JSONL + TensorBoard scalars, zero-shot accuracy during training (well above chance), CLI."""

from __future__ import annotations

import json

import pytest
import torch

from clipforge.data import synthetic_colours, to_eval_tensors
from clipforge.overrides import load_config
from clipforge.train import TrainConfig, fit
from clipforge.train.metrics import ZeroShotEval

SCALARS = {"loss", "lr", "logit_scale", "samples_per_s", "data_wait_s", "grad_norm"}


def test_training_logs_and_learns_zero_shot(tmp_path):
    overrides = [
        "model.context_length=12",
        "data.num_samples=480",
        "data.batch_size=32",
        "epochs=2",
        "optim.lr=2e-3",
        "optim.warmup_steps=3",
        "log.every_steps=5",
        "log.tensorboard=true",
        "log.progress=false",
        "eval.zeroshot_every_steps=15",
        f"output_dir={tmp_path}",
    ]
    config = load_config(TrainConfig, None, overrides)
    held_out = synthetic_colours(200, 32, seed=123)  # other noise than the training set (seed 0)
    batch = {"images": (tensors := to_eval_tensors(held_out, 32)).images, "labels": tensors.labels}
    zeroshot = ZeroShotEval(batch["images"], batch["labels"], held_out.classes, ["a photo of a {}."])
    results = fit(config, zeroshot=zeroshot)

    assert results["steps"] == 30 and results["images_seen"] == 960
    assert [e["step"] for e in results["evals"]] == [15, 30]
    assert results["zeroshot_top1"] >= 0.6  # chance: 0.1

    # The logged accuracy is the model's real zero-shot accuracy (recomputed here independently).
    from clipforge import tokenize
    from clipforge.train.state import load_state

    model = _model_from(load_state(results["checkpoint"]))
    with torch.no_grad():
        tokens = tokenize([f"a photo of a {c}." for c in held_out.classes], context_length=12)
        text = model.encode_text(tokens, normalize=True)
        predictions = (model.encode_image(batch["images"], normalize=True) @ text.T).argmax(-1)
    assert results["zeroshot_top1"] == pytest.approx((predictions == batch["labels"]).float().mean().item())

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20, 25, 30]
    assert {f"train/{k}" for k in SCALARS} <= set(train_rows[0])
    assert train_rows[-1]["train/loss"] < train_rows[0]["train/loss"] - 0.3
    assert all(1.0 <= r["train/logit_scale"] <= 100.0 for r in train_rows)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"train/{k}" for k in SCALARS} | {"eval/zeroshot_top1"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10, 15, 20, 25, 30]
    assert events.Scalars("train/loss")[-1].value == pytest.approx(train_rows[-1]["train/loss"], rel=1e-6)
    assert (tmp_path / "train_curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "train.json").read_text())["zeroshot_top1"] == results["zeroshot_top1"]


def _model_from(state):
    from clipforge.models import CLIP, CLIPConfig

    model = CLIP(CLIPConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def test_cli_smoke_and_config_errors(tmp_path, capsys):
    from clipforge.commands.train import main

    results = main(["--smoke", f"output_dir={tmp_path}", "log.progress=false"])
    assert results["steps"] == 6 and (tmp_path / "checkpoints" / "step_00000006.pt").exists()
    state = torch.load(tmp_path / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert state["config"]["max_steps"] == 6 and state["config"]["output_dir"] == str(tmp_path)

    with pytest.raises(SystemExit) as error:
        main(["--smoke", "data.batchsize=3"])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert "unknown key 'data.batchsize'" in message and "batch_size" in message
    assert not (tmp_path.parent / "runs").exists()
    with pytest.raises(SystemExit):
        main(["--smoke", "optim.lr=-1"])
    assert "optim.lr must be > 0" in capsys.readouterr().err
