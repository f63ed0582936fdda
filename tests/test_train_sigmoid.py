"""SigLIP sigmoid loss: the definition, the recomputing ring backward (gradcheck), 2 and 4 gloo processes in
both distributed forms == one process with the whole batch (loss and gradients to 1e-5), and per-rank loss
memory: constant in world size for the ring, growing for the all-gather."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from clipforge.train.objectives import ContrastiveObjective
from clipforge.train.ring import ring_sigmoid_loss
from clipforge.train.sigmoid import SigmoidObjective, sigmoid_loss
from clipforge.train.step import accumulate_gradients

BATCH = 16
MEMORY_ROWS, MEMORY_DIM = 128, 8  # per rank, for the memory test


class LinearCLIP(nn.Module):
    """Two linear towers and a temperature: what the objective needs, fast enough to spawn 4 times."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.image = nn.Linear(16, 8)
        self.text = nn.Linear(12, 8)
        self.logit_scale = nn.Parameter(torch.tensor(0.0))

    def encode_image(self, images, normalize=False):
        return F.normalize(self.image(images), dim=-1) if normalize else self.image(images)

    def encode_text(self, text, normalize=False):
        return F.normalize(self.text(text), dim=-1) if normalize else self.text(text)


def linear_batch(size: int = BATCH, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 16, generator=generator)
    text = images[:, :12] + 0.5 * torch.randn(size, 12, generator=generator)  # pairs related: real positives
    return {"images": images, "text": text, "index": torch.arange(size)}


def objective_for(form: str) -> SigmoidObjective:
    # t = 5, b = -2: gradients of order one (the paper's t = 10, b = -10 makes random pairs' loss tiny)
    return SigmoidObjective(LinearCLIP(), form=form, init_logit_scale=math.log(5.0), init_logit_bias=-2.0)


def grads_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_loss_matches_definition():
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(5, 7, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(5, 7, generator=generator), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    expected = 0.0
    for i in range(5):
        for j in range(5):
            logit = float(scale * images[i] @ texts[j] + bias)
            label = 1.0 if i == j else -1.0
            expected -= math.log(1 / (1 + math.exp(-label * logit)))
    for form in ("gather", "ring"):
        assert sigmoid_loss(images, texts, scale, bias, form=form).item() == pytest.approx(
            expected / 5, rel=1e-6
        )
    with pytest.raises(ValueError, match="one of \\('gather', 'ring'\\)"):
        sigmoid_loss(images, texts, scale, bias, form="chunks")


def test_ring_backward_gradcheck():
    generator = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(6, 4, dtype=torch.float64, generator=generator).requires_grad_(),
        torch.randn(6, 4, dtype=torch.float64, generator=generator).requires_grad_(),
        torch.tensor(3.0, dtype=torch.float64, requires_grad=True),
        torch.tensor(-2.0, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(ring_sigmoid_loss, inputs)


def test_paper_init_and_state():
    objective = SigmoidObjective(LinearCLIP())
    assert objective.model.logit_scale.exp().item() == pytest.approx(10.0)
    assert objective.logit_bias.item() == -10.0
    assert "logit_bias" in objective.state_dict()  # saved beside the model in checkpoints
    assert isinstance(objective, ContrastiveObjective)  # same towers, step hook and embedding cache


def test_a_model_with_its_own_bias_trains_that_bias():
    from clipforge.models import CLIP, get_config

    model = CLIP(get_config("tiny-vit"))
    model.logit_bias = nn.Parameter(torch.tensor(-3.0))  # as a SigLIP preset's (init_logit_bias)
    kept = SigmoidObjective(model, init_logit_bias=None)
    assert kept.logit_bias is None and kept.bias() is model.logit_bias and model.logit_bias.item() == -3.0
    assert not any(name == "logit_bias" for name, _ in kept.named_parameters())  # only model.logit_bias
    text = torch.randint(1, 100, (4, model.context_length))
    loss = kept.loss_from_embeddings(
        model.encode_image(torch.randn(4, 3, 32, 32), normalize=True), model.encode_text(text, normalize=True)
    )
    loss["loss"].backward()
    assert model.logit_bias.grad is not None and model.logit_bias.grad.abs().item() > 0
    SigmoidObjective(model)  # the paper's init re-initialises the model's bias
    assert model.logit_bias.item() == -10.0


def test_grad_cache_accumulation_equals_big_batch():
    batch = linear_batch()
    reference = objective_for("ring")
    big = accumulate_gradients(reference, batch, 1)["loss"]
    objective = objective_for("ring")
    small = accumulate_gradients(objective, batch, 4)["loss"]
    assert small.item() == pytest.approx(big.item(), abs=1e-6)
    for name, grad in grads_of(reference).items():
        torch.testing.assert_close(grads_of(objective)[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def _loss_memory(form: str, rank: int) -> int:
    from benchmarks.memory import LiveTensorBytes

    generator = torch.Generator().manual_seed(rank)
    images = torch.randn(MEMORY_ROWS, MEMORY_DIM, generator=generator).requires_grad_()
    texts = torch.randn(MEMORY_ROWS, MEMORY_DIM, generator=generator).requires_grad_()
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    with LiveTensorBytes() as tracker:
        sigmoid_loss(images, texts, scale, bias, form=form).backward()
    return tracker.peak_bytes


def _distributed_worker(rank: int, init_prefix: str, out_prefix: str) -> None:
    """4 spawned processes run the 4-rank case, then ranks 0 and 1 a 2-rank one (one spawn, fewer imports)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    for world_size in (4, 2):
        if rank >= world_size:
            return
        dist.init_process_group(
            "gloo", init_method=f"file://{init_prefix}{world_size}", rank=rank, world_size=world_size
        )
        outcome = _distributed_case(rank, world_size)
        if rank == 0:
            torch.save(outcome, f"{out_prefix}{world_size}.pt")
        dist.destroy_process_group()


def _distributed_case(rank: int, world_size: int) -> dict:
    from clipforge.train.distributed import all_reduce_mean
    from clipforge.train.reducer import GradientReducer

    share = BATCH // world_size
    local = {k: v[rank * share : (rank + 1) * share] for k, v in linear_batch().items()}
    results = {}
    for form, accum in [("gather", 1), ("ring", 1), ("ring", 2)]:
        objective = objective_for(form)
        reducer = GradientReducer(list(objective.parameters()))  # as fit() averages gradients over ranks
        loss = accumulate_gradients(objective, local, accum, before_last_backward=reducer.arm)["loss"]
        reducer.finish()
        results[f"{form}_accum{accum}"] = (all_reduce_mean(loss).item(), grads_of(objective))
    memory = {form: _loss_memory(form, rank) for form in ("gather", "ring")}
    return {"results": results, "memory": memory}


def test_two_and_four_processes_equal_one_process(tmp_path):
    reference = objective_for("gather")  # one process: the plain autograd definition over the whole batch
    loss = reference.loss(linear_batch())["loss"]
    loss.backward()
    expected = grads_of(reference)
    assert set(expected) == {"logit_bias", "model.image.weight", "model.image.bias", "model.text.weight",
                             "model.text.bias", "model.logit_scale"}  # fmt: skip
    assert min(g.abs().max().item() for g in expected.values()) > 1e-3  # gradients that can show an error
    memory = {1: {form: _loss_memory(form, 0) for form in ("gather", "ring")}}
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path / "world")), nprocs=4, join=True)
    for world_size in (2, 4):
        outcome = torch.load(tmp_path / f"world{world_size}.pt", weights_only=True)
        memory[world_size] = outcome["memory"]
        for case, (dist_loss, dist_grads) in outcome["results"].items():
            assert dist_loss == pytest.approx(loss.item(), abs=1e-5), (world_size, case)
            assert dist_grads.keys() == expected.keys()
            for name, grad in expected.items():
                torch.testing.assert_close(
                    dist_grads[name], grad, atol=1e-5, rtol=1e-5, msg=f"{case}: {name}"
                )
    # Ring: beyond one process only (n, E) exchange buffers, at most 4 in flight; from 3 ranks on one more
    # than at 2 (a text block travels while the gradient buffer does), then constant (benchmarks: 4 == 8).
    buffer = MEMORY_ROWS * MEMORY_DIM * 4
    ring = {w: m["ring"] for w, m in memory.items()}
    assert ring[4] - ring[2] == buffer
    assert 0 < ring[4] - ring[1] <= 4 * buffer
    # All-gather: every extra rank adds at least its (n, n) block of logits.
    gather = {w: m["gather"] for w, m in memory.items()}
    assert gather[4] - gather[2] >= 2 * MEMORY_ROWS * MEMORY_ROWS * 4
