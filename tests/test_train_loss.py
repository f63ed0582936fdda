"""Contrastive loss: reference values, 2-process (gloo) == 1 process, GradCache accumulation == big batch."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from clipforge.models import CLIP, get_config
from clipforge.train.loss import contrastive_loss
from clipforge.train.objectives import ContrastiveObjective
from clipforge.train.step import accumulate_gradients

BATCH = 8


def tiny_model(seed: int = 0) -> CLIP:
    config = get_config("tiny-vit")
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, context_length=12))
    torch.manual_seed(seed)
    return CLIP(config)


def random_batch(size: int = BATCH, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(1, 1000, (size, 12), generator=generator)
    text[:, -1] = 49407  # EOT: pooled position
    return {
        "images": torch.randn(size, 3, 32, 32, generator=generator),
        "text": text,
        "index": torch.arange(size),
    }


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_loss_matches_definition():
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(5, 7, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(5, 7, generator=generator), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * images @ texts.T
    expected = 0
    for i in range(5):  # row-wise softmax cross-entropy, both directions
        expected -= math.log(logits[i].softmax(0)[i]) + math.log(logits[:, i].softmax(0)[i])
    assert contrastive_loss(images, texts, scale).item() == pytest.approx(expected / 10, rel=1e-6)
    # Perfectly aligned, well-separated pairs have near-zero loss.
    eye = torch.eye(5, 7)
    assert contrastive_loss(eye, eye, torch.tensor(100.0)).item() < 1e-12


def test_logit_scale_clamped_after_step():
    model = tiny_model()
    objective = ContrastiveObjective(model, max_logit_scale=100.0)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    objective.after_step()
    assert model.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-6)


@pytest.mark.parametrize("accum_steps", [2, 4])
def test_grad_cache_accumulation_equals_big_batch(accum_steps):
    batch = random_batch()
    model = tiny_model()
    objective = ContrastiveObjective(model)
    big = accumulate_gradients(objective, batch, 1)["loss"]
    big_grads = gradients(model)
    model.zero_grad(set_to_none=True)
    small = accumulate_gradients(objective, batch, accum_steps)["loss"]
    small_grads = gradients(model)
    assert small.item() == pytest.approx(big.item(), abs=1e-6)
    assert big_grads.keys() == small_grads.keys() and len(big_grads) > 10
    for name, grad in big_grads.items():
        torch.testing.assert_close(small_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # Naive accumulation (mean of micro-batch losses) is a different, smaller-batch objective.
    model.zero_grad(set_to_none=True)
    naive = sum(objective.loss(b)["loss"].item() for b in _halves(batch)) / 2
    assert abs(naive - big.item()) > 1e-3


def _halves(batch):
    return [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]


def _distributed_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    from clipforge.train.distributed import all_reduce_mean
    from clipforge.train.reducer import GradientReducer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    batch = random_batch()
    share = BATCH // world_size
    local = {k: v[rank * share : (rank + 1) * share] for k, v in batch.items()}
    results = {}
    for name, local_loss, accum in [("full", False, 1), ("local", True, 1), ("local_accum2", True, 2)]:
        model = tiny_model()
        objective = ContrastiveObjective(model, local_loss=local_loss)
        reducer = GradientReducer(list(model.parameters()), bucket_bytes=2**16)  # as fit() averages
        loss = accumulate_gradients(objective, local, accum, before_last_backward=reducer.arm)["loss"]
        reducer.finish()
        results[name] = (all_reduce_mean(loss).item(), gradients(model))
    if rank == 0:
        torch.save(results, out_file)
    dist.destroy_process_group()


def test_two_processes_equal_one_process_with_whole_batch(tmp_path):
    out_file = tmp_path / "dist.pt"
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    results = torch.load(out_file, weights_only=True)
    model = tiny_model()
    loss = ContrastiveObjective(model).loss(random_batch())["loss"]
    loss.backward()
    reference = gradients(model)
    for name, (dist_loss, dist_grads) in results.items():
        assert dist_loss == pytest.approx(loss.item(), abs=1e-5), name
        for key, grad in reference.items():
            torch.testing.assert_close(dist_grads[key], grad, atol=1e-5, rtol=1e-4, msg=f"{name}: {key}")


def test_grad_cache_counts_batchnorm_statistics_once():
    config = get_config("tiny-resnet")
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, context_length=12))
    torch.manual_seed(0)
    model = CLIP(config.with_image_size(32))
    reference = CLIP(config.with_image_size(32))
    reference.load_state_dict(model.state_dict())
    batch = random_batch()
    accumulate_gradients(ContrastiveObjective(model), batch, 2)
    with torch.no_grad():  # what the recompute pass alone does to the running statistics
        for half in _halves(batch):
            reference.encode_image(half["images"])
    for (name, buffer), expected in zip(model.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(buffer, expected), name
    assert any(name.endswith("num_batches_tracked") and int(b) == 2 for name, b in model.named_buffers())


def test_dedup_text_matches_plain_contrastive_loss():
    """Encoding each distinct caption once gives the same loss and gradients as encoding every row."""
    torch.manual_seed(0)
    model = CLIP(get_config("demo-cifar")).eval()  # eval: BatchNorm uses running stats, deterministic
    rows = torch.tensor([[49406, 320, 1125, 49407], [49406, 320, 2368, 49407]])
    batch = {"images": torch.randn(6, 3, 32, 32), "text": rows[torch.tensor([0, 1, 0, 0, 1, 1])]}
    losses, grads = [], []
    for objective in (ContrastiveObjective(model), ContrastiveObjective(model, dedup_text=True)):
        model.zero_grad()
        loss = objective.loss(batch)["loss"]
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.text.token_embedding.weight.grad.clone())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
