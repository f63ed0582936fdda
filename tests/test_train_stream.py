"""Training from streamed shards: SIGKILL mid-epoch then resume gives bit-identical weights on CPU, in one
process and as a real `torchrun --nproc_per_node=2` run with the sigmoid (ring) loss."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_data_shards import cifar_rows, write_shards

from clipforge.overrides import load_config
from clipforge.train import TrainConfig, fit
from clipforge.train.state import load_state

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}


def stream_run(shards: Path, output_dir: Path, *extra: str) -> list[str]:
    # 4 shards x 24 samples; 2 workers per rank, batch 8: 12 batches per epoch on one rank, 6 on each of two.
    return [
        "model.context_length=16", "data.kind=stream", f"data.path={shards}", "data.num_workers=2",
        "data.shuffle_buffer=8", "data.batch_size=8", "epochs=2", "optim.warmup_steps=2", "optim.lr=1e-3",
        "checkpoint.every_steps=5", "checkpoint.keep_last=10", "log.every_steps=5", "log.progress=false",
        "log.plot=false", "device=cpu", "precision=fp32", "deterministic=true", f"output_dir={output_dir}", *extra,
    ]  # fmt: skip


KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    from clipforge.overrides import load_config
    from clipforge.train import TrainConfig, fit

    def kill(event, info):  # SIGKILL itself right after this checkpoint is on disk: a crash at a known point
        if event == "checkpoint" and info["step"] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

    fit(load_config(TrainConfig, None, json.loads(sys.argv[1])), callbacks=(kill,))
    """
)


@pytest.fixture(scope="module")
def shards(shared_data, tmp_path_factory) -> Path:
    return write_shards(
        tmp_path_factory.mktemp("stream") / "shards", cifar_rows(shared_data), 4, per_shard=24
    )


def _assert_same_weights(final: Path, expected: Path) -> None:
    a, b = load_state(final)["model"], load_state(expected)["model"]
    assert a.keys() == b.keys()
    for name, tensor in b.items():
        assert torch.equal(a[name], tensor), name


def test_stream_sigkill_mid_epoch_then_resume_is_bit_identical(shards, tmp_path):
    reference = fit(load_config(TrainConfig, None, stream_run(shards, tmp_path / "ref")))
    assert reference["steps"] == 24
    run = stream_run(shards, tmp_path / "killed")
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, json.dumps(run), "10"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    state = load_state(tmp_path / "killed" / "checkpoints" / "step_00000010.pt")
    assert state["epoch"] == 0 and state["batches_in_epoch"] == 10  # mid-epoch: 10 of 12
    assert [s["handed_out"] for s in state["data"]] == [10]  # the stream's position per rank ...
    assert set(state["data"][0]["positions"]) == {"0", "1"}  # ... and per worker
    resumed = fit(load_config(TrainConfig, None, [*run, "checkpoint.resume=auto"]))
    assert resumed["steps"] == 24
    _assert_same_weights(Path(resumed["checkpoint"]), Path(reference["checkpoint"]))


def _torchrun(args: list[str]) -> subprocess.Popen:
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun) if torchrun.exists() else "torchrun", "--nproc_per_node=2", "--standalone"]
    command += ["-m", "clipforge.cli", "train", *args]
    return subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _kill_tree(root: int) -> None:
    """SIGKILL a process and all its descendants (torchrun, its ranks, their loader workers; torchrun starts
    each rank in a session of its own, so a process-group kill would miss them). All are found before any is
    killed, so no orphan escapes by being re-parented."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree, grew = tree | found, bool(found)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait(process: subprocess.Popen, timeout_s: float = 900) -> str:
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_tree(process.pid)
        process.communicate()
        raise
    return output


@pytest.mark.slow  # three 2-process torchrun trainings: ~1-2 min on an idle 2-core host
def test_torchrun_two_ranks_stream_sigmoid_sigkill_and_resume(shards, tmp_path):
    assert shutil.which("torchrun") or Path(sys.executable).with_name("torchrun").exists()
    extra = ["loss.objective=sigmoid", "loss.sigmoid_form=ring", "checkpoint.every_steps=2"]
    reference = _torchrun(stream_run(shards, tmp_path / "ref", *extra))
    output = _wait(reference)
    assert reference.returncode == 0, output[-5000:]
    expected = tmp_path / "ref" / "checkpoints" / "step_00000012.pt"  # 2 epochs x 6 steps
    assert load_state(expected)["world_size"] == 2

    run = stream_run(shards, tmp_path / "killed", *extra)
    killed = _torchrun(run)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 900
    while (
        not (checkpoints / "step_00000004.pt").exists()
        and killed.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    _kill_tree(killed.pid)  # torchrun, both ranks and their loader workers, mid-run
    killed.communicate()
    saved = sorted(checkpoints.glob("step_*.pt"))
    assert saved and saved[-1].name != "step_00000012.pt", "killed too late: the run had finished"
    state = load_state(saved[-1])
    assert state["batches_in_epoch"] > 0 and len(state["data"]) == 2  # mid-epoch, a stream position per rank

    resumed = _torchrun([*run, "checkpoint.resume=auto"])
    output = _wait(resumed)
    assert resumed.returncode == 0, output[-5000:]
    assert f"resumed from {saved[-1]}" in output
    _assert_same_weights(checkpoints / "step_00000012.pt", expected)
