"""Exact resume: SIGKILL mid-epoch then resume gives bit-identical parameters; any worker count sees each
sample once per epoch; checkpoints keep the last K plus best and hold the effective config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clipforge.overrides import load_config
from clipforge.train import TrainConfig, fit
from clipforge.train.state import load_state

# 112 samples / batch 16 = 7 steps per epoch, 3 epochs; checkpoints every 5 steps all fall mid-epoch.
RUN = [
    "model.context_length=12",
    "data.num_samples=112",
    "data.batch_size=16",
    "epochs=3",
    "optim.warmup_steps=3",
    "optim.lr=1e-3",
    "checkpoint.every_steps=5",
    "checkpoint.keep_last=10",
    "log.every_steps=3",
    "log.progress=false",
    "log.plot=false",
    "deterministic=true",
    "device=cpu",
]


def _train_cli(output_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "clipforge.cli", "train", *RUN, f"output_dir={output_dir}", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    reference = fit(load_config(TrainConfig, None, [*RUN, f"output_dir={tmp_path / 'ref'}"]))
    assert reference["steps"] == 21
    expected = load_state(reference["checkpoint"])["model"]

    run_dir = tmp_path / "killed"
    process = _train_cli(run_dir)
    first = run_dir / "checkpoints" / "step_00000005.pt"
    deadline = time.monotonic() + 240
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stdout.read()
    saved = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert saved and saved[-1].name != "step_00000021.pt"  # killed before the end
    state = load_state(saved[-1])
    assert state["epoch_offset"] > 0  # mid-epoch
    assert state["config"]["data"]["batch_size"] == 16 and state["config"]["optim"]["lr"] == 1e-3

    # Resume with a different number of loader workers: same samples, same order, same bits.
    resumed = _train_cli(run_dir, "checkpoint.resume=auto", "data.num_workers=2")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"resumed from {saved[-1]}" in output
    final = load_state(run_dir / "checkpoints" / "step_00000021.pt")["model"]
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(final[name], tensor), name


class _Abort(Exception):
    pass


def test_resume_with_other_worker_count_sees_each_sample_once(tmp_path):
    overrides = [
        "model.context_length=12",
        "data.num_samples=96",
        "data.batch_size=8",
        "epochs=1",
        "checkpoint.every_steps=4",
        "log.progress=false",
        "log.plot=false",
        f"output_dir={tmp_path}",
    ]
    by_step: dict[int, list[int]] = {}

    def record(event, info):
        if event == "step":
            by_step[info["step"]] = info["batch"]["index"].tolist()
            if info["step"] == 6 and abort:
                raise _Abort

    abort = True
    with pytest.raises(_Abort):
        fit(load_config(TrainConfig, None, [*overrides, "data.num_workers=0"]), callbacks=(record,))
    abort = False
    results = fit(
        load_config(TrainConfig, None, [*overrides, "data.num_workers=2", "checkpoint.resume=auto"]),
        callbacks=(record,),
    )
    assert results["steps"] == 12 and sorted(by_step) == list(range(1, 13))
    seen = [i for step in sorted(by_step) for i in by_step[step]]
    assert sorted(seen) == list(range(96))  # every sample exactly once in the epoch

    by_step_fresh: dict[int, list[int]] = {}
    fit(
        load_config(
            TrainConfig, None, [*overrides, f"output_dir={tmp_path / 'fresh'}", "data.num_workers=1"]
        ),
        callbacks=(
            lambda e, i: (
                by_step_fresh.__setitem__(i["step"], i["batch"]["index"].tolist()) if e == "step" else None
            ),
        ),
    )
    assert by_step_fresh == by_step  # and in the uninterrupted order


def test_keeps_last_k_plus_best(tmp_path):
    from clipforge.train.metrics import ZeroShotEval

    class ScriptedEval(ZeroShotEval):
        scores = iter([0.3, 0.5, 0.4, 0.2])

        def __init__(self):
            pass

        def __call__(self, model):
            return {"zeroshot_top1": next(self.scores)}

    overrides = [
        "model.context_length=12",
        "data.num_samples=64",
        "data.batch_size=8",
        "epochs=1",
        "checkpoint.every_steps=2",
        "checkpoint.keep_last=2",
        "eval.zeroshot_every_steps=2",
        "log.progress=false",
        "log.plot=false",
        f"output_dir={tmp_path}",
    ]
    results = fit(load_config(TrainConfig, None, overrides), zeroshot=ScriptedEval())
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "step_00000006.pt", "step_00000008.pt"]
    best = load_state(tmp_path / "checkpoints" / "best.pt")
    assert best["step"] == 4 and best["best"] == 0.5 and results["best"] == 0.5
    assert [e["zeroshot_top1"] for e in results["evals"]] == [0.3, 0.5, 0.4, 0.2]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


class _ListedLoader:
    """A minimal loader of the one protocol that is not clipforge's: 6 batches of 8 per epoch in a seeded order,
    its position a batch counter."""

    batch_size, batches_per_epoch = 8, 6

    def __init__(self):
        from clipforge import tokenize
        from clipforge.data import synthetic_colours

        self.arrays = synthetic_colours(48, 32, num_classes=4)
        self.tokens = tokenize([f"a photo of a {c}." for c in self.arrays.classes], context_length=12)
        self.epoch = self.position = 0

    def order(self, epoch):
        from clipforge.data import epoch_permutation

        return epoch_permutation(48, seed=3, epoch=epoch)

    def set_epoch(self, epoch):
        self.epoch, self.position = epoch, 0

    def __iter__(self):
        from clipforge.data import eval_batch

        while self.position < self.batches_per_epoch:
            index = self.order(self.epoch)[self.position * 8 : self.position * 8 + 8]
            self.position += 1
            labels = self.arrays.labels[index]
            yield {"images": eval_batch(self.arrays.images[index], 32), "text": self.tokens[labels],
                   "index": index}  # fmt: skip

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        self.epoch, self.position = state["epoch"], state["position"]


def test_fit_trains_any_protocol_loader_and_resumes_its_state(tmp_path):
    overrides = ["model.context_length=12", "data.kind=custom", "data.batch_size=8", "epochs=2",
                 "checkpoint.every_steps=4", "log.progress=false", "log.plot=false"]  # fmt: skip

    def run(output_dir, *extra, abort_at=None):
        seen = []

        def record(event, info):
            if event == "step":
                seen.append(info["batch"]["index"].tolist())
                if info["step"] == abort_at:
                    raise _Abort

        config = load_config(TrainConfig, None, [*overrides, f"output_dir={output_dir}", *extra])
        return fit(config, train_data=_ListedLoader(), callbacks=(record,)), seen

    results, seen = run(tmp_path / "ref")
    loader = _ListedLoader()
    assert results["steps"] == 12 and results["images_seen"] == 96
    flat = [i for b in seen for i in b]
    assert flat == loader.order(0).tolist() + loader.order(1).tolist()
    with pytest.raises(_Abort):
        run(tmp_path / "cut", abort_at=10)
    state = load_state(tmp_path / "cut" / "checkpoints" / "step_00000008.pt")
    assert state["data"] == [{"epoch": 1, "position": 2}] and state["epoch"] == 1
    resumed, rest = run(tmp_path / "cut", "checkpoint.resume=auto")
    assert rest == seen[8:]  # the loader's own state resumed it at its 3rd batch of epoch 1
    expected = load_state(results["checkpoint"])["model"]
    final = load_state(resumed["checkpoint"])["model"]
    assert all(torch.equal(final[k], v) for k, v in expected.items())


def test_exact_resume_with_clipforge_data_loader(tmp_path):
    """The data helper's in-memory loader (augmentation keyed by seed, epoch, index) resumes bit-exactly."""
    from clipforge.data import LabelledArrays, LabelledLoaderConfig, labelled_loader
    from clipforge.data.augment import AugmentConfig

    generator = torch.Generator().manual_seed(0)
    arrays = LabelledArrays(
        images=torch.randint(0, 256, (80, 36, 36, 3), dtype=torch.uint8, generator=generator),
        labels=torch.arange(80) % 4,
        classes=["cat", "dog", "car", "ship"],
    )
    loader_config = LabelledLoaderConfig(
        batch_size=8, seed=5, context_length=12, augment=AugmentConfig(image_size=32)
    )
    overrides = [
        "model.context_length=12",
        "data.kind=custom",
        "data.batch_size=8",
        "epochs=2",
        "checkpoint.every_steps=7",
        "log.progress=false",
        "log.plot=false",
    ]

    def run(output_dir, *extra, callbacks=()):
        config = load_config(TrainConfig, None, [*overrides, f"output_dir={output_dir}", *extra])
        return fit(config, train_data=labelled_loader(arrays, loader_config), callbacks=callbacks)

    expected = load_state(run(tmp_path / "ref")["checkpoint"])["model"]

    def abort_at_13(event, info):
        if event == "step" and info["step"] == 13:
            raise _Abort

    with pytest.raises(_Abort):
        run(tmp_path / "cut", callbacks=(abort_at_13,))
    results = run(tmp_path / "cut", "checkpoint.resume=auto")  # resumes from step 7 (epoch 0, offset 56)
    assert results["steps"] == 20
    final = load_state(results["checkpoint"])["model"]
    for name, tensor in expected.items():
        assert torch.equal(final[name], tensor), name


def test_fit_leaves_global_state_as_it_found_it(tmp_path):
    """Seeding and deterministic mode are fit's own business: RNGs and flags are restored afterwards."""
    import random

    import numpy as np

    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    assert not torch.are_deterministic_algorithms_enabled()
    overrides = ["model.context_length=12", "data.num_samples=32", "data.batch_size=8", "max_steps=2",
                 "deterministic=true", "log.progress=false", "log.plot=false", f"output_dir={tmp_path}"]  # fmt: skip
    fit(load_config(TrainConfig, None, overrides))
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert (np.random.get_state()[1] == before[2]).all()
