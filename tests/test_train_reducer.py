"""Bucketed, overlapped gradient all-reduce: the same averaged gradients as one flattened all-reduce, with
.grad living inside the buckets (no copy) and buckets launched while backward still runs."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp
from test_train_loss import gradients, random_batch, tiny_model

from clipforge.train.objectives import ContrastiveObjective
from clipforge.train.reducer import GradientReducer

BUCKET_BYTES = 64 * 1024  # several buckets for the tiny model


def test_grads_are_bucket_views_and_unchanged_in_one_process():
    batch = random_batch()
    model = tiny_model()
    ContrastiveObjective(model).loss(batch)["loss"].backward()
    expected = gradients(model)
    model.zero_grad(set_to_none=True)
    reducer = GradientReducer(list(model.parameters()), BUCKET_BYTES)
    assert len(reducer.buckets) > 2
    reducer.arm()
    ContrastiveObjective(model).loss(batch)["loss"].backward()
    reducer.finish()
    storages = {b.buffer.untyped_storage().data_ptr() for b in reducer.buckets}
    for name, param in model.named_parameters():
        assert param.grad.untyped_storage().data_ptr() in storages, name  # accumulated in place
        torch.testing.assert_close(param.grad, expected[name], rtol=0, atol=0, msg=name)
    model.zero_grad(set_to_none=True)  # what the optimizer does between steps
    reducer.prepare()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def _worker(rank: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    local = {k: v[rank * 4 : (rank + 1) * 4] for k, v in random_batch().items()}
    model = tiny_model()
    ContrastiveObjective(model).loss(local)["loss"].backward()
    for param in model.parameters():  # the plain reference: one all-reduce per gradient
        dist.all_reduce(param.grad)
        param.grad /= 2
    expected = gradients(model)
    model = tiny_model()
    reducer = GradientReducer(list(model.parameters()), BUCKET_BYTES)
    launched_in_backward = []
    for _step in range(2):  # the second step runs with buckets rebuilt in the observed gradient order
        model.zero_grad(set_to_none=True)
        reducer.prepare()
        objective = ContrastiveObjective(model)  # GradCache's structure: loss pass, then the towers' pass
        embeddings = objective.embed(local)
        leaves = [e.detach().requires_grad_() for e in embeddings]
        objective.loss_from_embeddings(*leaves)["loss"].backward()  # logit_scale's gradient, not armed
        reducer.arm()
        torch.autograd.backward(embeddings, [leaf.grad for leaf in leaves])
        launched_in_backward.append((reducer._next, len(reducer.buckets)))
        reducer.finish()
    if rank == 0:
        torch.save(
            {"expected": expected, "reduced": gradients(model), "launched": launched_in_backward}, out_file
        )
    dist.destroy_process_group()


def test_two_processes_same_average_and_overlap(tmp_path):
    out_file = tmp_path / "out.pt"
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    out = torch.load(out_file, weights_only=True)
    for name, grad in out["expected"].items():
        torch.testing.assert_close(out["reduced"][name], grad, atol=1e-7, rtol=1e-6, msg=name)
    # Buckets went out while backward was still running, all but the one holding logit_scale (no gradient in
    # the towers' pass: launched by finish()), before and after the rebuild in the observed order.
    for launched, buckets in out["launched"]:
        assert launched == buckets - 1 and buckets > 2
