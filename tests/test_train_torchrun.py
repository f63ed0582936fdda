"""`torchrun --nproc_per_node=2 ... clipforge train` on CPU (gloo): rank 0 alone writes, and 2 x 8 pairs per
step train the same parameters as 1 process with 16 pairs per step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch

from clipforge.overrides import load_config
from clipforge.train import TrainConfig, fit
from clipforge.train.state import load_state

COMMON = [
    "model.context_length=12",
    "data.num_samples=96",
    "epochs=1",
    "max_steps=4",
    "optim.warmup_steps=2",
    "log.every_steps=1",
    "log.progress=false",
    "log.plot=false",
    "device=cpu",
    "precision=fp32",  # the comparison is about ranks, not about auto precision
]


def test_torchrun_two_cpu_processes_match_one(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists() or shutil.which("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    command = [
        str(torchrun) if torchrun.exists() else "torchrun",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "clipforge.cli",
        "train",
        *COMMON,
        "data.batch_size=8",
        "loss.local_loss=true",
        f"output_dir={out}",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers
        process.wait()
        raise
    assert process.returncode == 0, output[-5000:]
    results = json.loads((out / "train.json").read_text())
    assert results["world_size"] == 2 and results["images_seen"] == 4 * 16
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]  # one writer, no duplicate lines
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000004.pt"]
    state = load_state(out / "checkpoints" / "step_00000004.pt")
    assert len(state["rng"]) == 2 and state["world_size"] == 2

    single = fit(
        load_config(TrainConfig, None, [*COMMON, "data.batch_size=16", f"output_dir={tmp_path / 'one'}"])
    )
    expected = load_state(single["checkpoint"])["model"]
    for name, tensor in expected.items():
        torch.testing.assert_close(state["model"][name], tensor, atol=2e-5, rtol=1e-4, msg=name)
