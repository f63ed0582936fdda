"""CUDA-only checks of the training path (skipped without a GPU; benchmarks/gpu_check.py runs them on one):
no host synchronisation in the text forward or a bf16 training step, CUDA == CPU for the ring sigmoid loss and
the text tower, patch dropout and the gradient reducer on the device, pinned-memory batches."""

from __future__ import annotations

import pytest
import torch
from test_train_loss import random_batch, tiny_model

from clipforge.train.objectives import ContrastiveObjective
from clipforge.train.optim import build_optimizer
from clipforge.train.reducer import GradientReducer
from clipforge.train.ring import ring_sigmoid_loss
from clipforge.train.speed import to_device
from clipforge.train.step import accumulate_gradients

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CUDA = torch.device("cuda")


def test_text_forward_never_syncs_and_matches_cpu():
    model = tiny_model()
    text = random_batch(32)["text"]
    text[:16, 6:] = 0
    text[:16, 5] = 49407  # two lengths: the CPU path trims and groups, the CUDA path must not read them
    expected = model.encode_text(text)
    model = model.to(CUDA)
    text = text.to(CUDA)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        features = model.encode_text(text)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(features.cpu(), expected, atol=1e-4, rtol=1e-4)


def test_bf16_training_step_never_syncs():
    model = tiny_model().to(CUDA)
    objective = ContrastiveObjective(model)
    optimizer = build_optimizer(objective, 1e-3, 0.2, (0.9, 0.98), 1e-6)
    params = [p for p in objective.parameters() if p.requires_grad]
    batch = {k: v.to(CUDA) for k, v in random_batch(16).items()}

    def step():
        optimizer.zero_grad(set_to_none=True)
        metrics = accumulate_gradients(
            objective, batch, 2, autocast=lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        )
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        objective.after_step()
        return metrics

    step()  # first step: lazy state creation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metrics = step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(metrics["loss"]).item()


def test_ring_sigmoid_loss_cuda_equals_cpu():
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(64, 32, generator=generator), torch.randn(64, 32, generator=generator)]
    inputs += [torch.tensor(10.0), torch.tensor(-10.0)]
    results = []
    for device in ("cpu", "cuda"):
        leaves = [t.to(device).requires_grad_() for t in inputs]
        loss = ring_sigmoid_loss(*leaves)
        loss.backward()
        results.append([loss.detach().cpu()] + [leaf.grad.cpu() for leaf in leaves])
    for cpu, cuda in zip(*results, strict=True):
        torch.testing.assert_close(cuda, cpu, atol=1e-5, rtol=1e-5)


def test_patch_dropout_on_cuda():
    model = tiny_model().to(CUDA)
    images = random_batch()["images"].to(CUDA)
    model.eval()
    expected = model.encode_image(images)
    model.visual.patch_dropout = 0.5
    torch.testing.assert_close(model.encode_image(images), expected, rtol=0, atol=0)
    model.train()
    torch.manual_seed(1)
    first = model.encode_image(images)
    torch.manual_seed(1)
    torch.testing.assert_close(model.encode_image(images), first, rtol=0, atol=0)
    assert (first - expected).abs().max() > 1e-3


def test_reducer_keeps_gradients_in_cuda_buckets():
    model = tiny_model().to(CUDA)
    reducer = GradientReducer(list(model.parameters()), bucket_bytes=64 * 1024)
    reducer.arm()
    ContrastiveObjective(model).loss({k: v.to(CUDA) for k, v in random_batch().items()})["loss"].backward()
    reducer.finish()
    storages = {b.buffer.untyped_storage().data_ptr() for b in reducer.buckets}
    assert all(p.grad.untyped_storage().data_ptr() in storages for p in model.parameters())


def test_batches_travel_through_pinned_memory():
    batch = random_batch()
    moved = to_device(batch, CUDA)
    torch.cuda.synchronize()
    for key, value in batch.items():
        assert moved[key].is_cuda and torch.equal(moved[key].cpu(), value)
