"""Precision (fp32 / bf16 autocast / fp16 + GradScaler) and the gradient-checkpointing switch."""

from __future__ import annotations

import pytest
import torch
from test_train_loss import gradients, random_batch, tiny_model

from clipforge.overrides import ConfigError, load_config
from clipforge.train import TrainConfig, fit
from clipforge.train.objectives import ContrastiveObjective
from clipforge.train.step import accumulate_gradients

TINY = [
    "model.context_length=12",
    "data.num_samples=64",
    "data.batch_size=16",
    "max_steps=3",
    "log.every_steps=1",
    "log.progress=false",
    "log.plot=false",
]


def test_grad_checkpointing_gives_the_same_gradients():
    batch = random_batch()
    model = tiny_model()
    loss = accumulate_gradients(ContrastiveObjective(model), batch)["loss"]
    plain = gradients(model)
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    assert accumulate_gradients(ContrastiveObjective(model), batch)["loss"].item() == pytest.approx(
        loss.item()
    )
    for name, grad in gradients(model).items():
        torch.testing.assert_close(grad, plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_autocast_on_cpu_is_close_to_fp32():
    batch = random_batch()
    model = tiny_model()
    fp32 = accumulate_gradients(ContrastiveObjective(model), batch)["loss"].item()
    model.zero_grad(set_to_none=True)
    bf16 = accumulate_gradients(
        ContrastiveObjective(model), batch, 2, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    )["loss"].item()
    assert bf16 == pytest.approx(fp32, abs=0.05)
    assert all(torch.isfinite(g).all() for g in gradients(model).values())


def test_fit_bf16_on_cpu(tmp_path):
    results = fit(load_config(TrainConfig, None, [*TINY, "precision=bf16", f"output_dir={tmp_path}"]))
    assert results["precision"] == "bf16" and results["steps"] == 3
    assert 0 < results["final_loss"] < 10


def test_fp16_needs_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        fit(load_config(TrainConfig, None, [*TINY, "precision=fp16", "device=cpu", f"output_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="must be one of 'auto', 'fp32', 'bf16', 'fp16'"):
        load_config(TrainConfig, None, ["precision=int8"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_fit_on_gpu(tmp_path, precision):
    results = fit(load_config(TrainConfig, None, [*TINY, f"precision={precision}", f"output_dir={tmp_path}"]))
    assert results["precision"] == precision and results["steps"] == 3
    assert 0 < results["final_loss"] < 10


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx2 fma", "fp32"),
        ("fpu avx512f avx512_bf16", "fp32"),
        ("fpu avx512_bf16 amx_bf16 amx_tile", "bf16"),
    ],
)
def test_auto_precision_on_cpu_needs_amx(monkeypatch, tmp_path, flags, expected):
    """AVX512-BF16 without AMX runs bf16 matmuls slower than fp32: auto must stay fp32 there."""
    import clipforge.device as device

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(device, "Path", lambda _: cpuinfo)
    assert device.resolve_precision("auto", torch.device("cpu")) == expected
