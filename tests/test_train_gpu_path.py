"""GPU-path behaviour checkable without a GPU: no host synchronisation in the text forward off the CPU
(meta tensors raise on any read of values), and resuming RNG states saved on a machine with more GPUs."""

from __future__ import annotations

import os

import torch

from clipforge.models import CLIP, get_config
from clipforge.train import state as state_module


def test_text_forward_off_cpu_reads_no_values():
    model = CLIP(get_config("tiny-vit"))
    text = torch.zeros(40, 77, dtype=torch.long)
    text[:20, 5], text[20:, 9] = 49407, 49407  # two lengths, 40 rows: the CPU path groups and trims
    expected = model.encode_text(text)
    meta = CLIP(get_config("tiny-vit")).to("meta")
    assert meta.encode_text(text.to("meta")).shape == (40, 64)  # .tolist()/int() would raise on meta
    model.text.trim_to_longest = False  # the untrimmed path the accelerator takes gives the same features
    torch.testing.assert_close(model.encode_text(text), expected, atol=1e-5, rtol=1e-5)


def test_restore_rng_from_a_machine_with_more_gpus(monkeypatch):
    saved = state_module.capture_rng()  # this machine's CPU generators ...
    saved["cuda"] = [torch.tensor([g], dtype=torch.uint8) for g in range(8)]  # ... and 8 GPUs' states
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.append((int(s[0]), i)))
    state_module.restore_rng(saved)
    assert restored == [(0, 0), (1, 1)]  # the two visible devices; set_rng_state_all would fail on index 2


def test_deterministic_mode_is_strict_on_cuda(monkeypatch):
    from clipforge.train.seeding import global_state_restored, seed_everything

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with global_state_restored():
        seed_everything(0, True, "cuda")
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # cuBLAS's deterministic workspace
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()  # an error, not a warning
        seed_everything(0, True, "cpu")
        assert torch.is_deterministic_algorithms_warn_only_enabled()  # CPU: warn (resume is tested exact)
    assert not torch.are_deterministic_algorithms_enabled()  # fit leaves the process as it found it


def test_resnet_trains_channels_last_on_gpus_too():
    from clipforge.train.loop import use_fast_layout

    model = CLIP(get_config("tiny-resnet"))
    use_fast_layout(model, torch.device("cuda"))
    assert model.visual.channels_last
