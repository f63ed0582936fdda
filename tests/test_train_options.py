"""Training options and what each must change and must not: FLIP patch dropout, gradient checkpointing of the
ModifiedResNet, torch.compile of the towers, the weight EMA."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_train_loss import gradients, random_batch, tiny_model

from clipforge.models import CLIP, get_config
from clipforge.train.ema import WeightEMA
from clipforge.train.objectives import ContrastiveObjective
from clipforge.train.speed import compile_towers
from clipforge.train.step import accumulate_gradients


def _tokens_seen(model: CLIP, images: torch.Tensor) -> int:
    seen = []
    handle = model.visual.ln_pre.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    model.encode_image(images)
    handle.remove()
    return seen[0]


def test_patch_dropout_only_in_training():
    model = tiny_model()  # 32x32 images, 8x8 patches: 16 patch tokens + the class token
    images = random_batch()["images"]
    model.eval()
    expected = model.encode_image(images)
    model.visual.patch_dropout = 0.5
    assert _tokens_seen(model, images) == 17
    torch.testing.assert_close(model.encode_image(images), expected, rtol=0, atol=0)  # eval: every patch
    model.train()
    assert _tokens_seen(model, images) == 1 + 8  # the class token and half the patches
    torch.manual_seed(0)
    first = model.encode_image(images)
    assert (first - expected).abs().max() > 1e-3  # a different, random subset of patches
    torch.manual_seed(0)
    torch.testing.assert_close(model.encode_image(images), first, rtol=0, atol=0)  # seeded: reproducible
    model.visual.patch_dropout = 0.0
    torch.testing.assert_close(model.encode_image(images), expected, rtol=0, atol=0)  # off: unchanged


def test_patch_dropout_with_grad_cache_is_exact():
    """The recompute pass of exact accumulation replays the RNG, so it drops the same patches."""
    batch = random_batch()
    model = tiny_model()
    model.visual.patch_dropout = 0.5
    objective = ContrastiveObjective(model)
    torch.manual_seed(3)
    embeddings = [torch.cat(parts) for parts in zip(*[objective.embed(half) for half in _halves(batch)])]
    big = objective.loss_from_embeddings(*embeddings)["loss"]
    big.backward()
    expected = gradients(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    small = accumulate_gradients(objective, batch, 2)["loss"]
    assert small.item() == pytest.approx(big.item(), abs=1e-6)
    for name, grad in expected.items():
        torch.testing.assert_close(gradients(model)[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def _halves(batch):
    return [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]


def _tiny_resnet() -> CLIP:
    config = get_config("tiny-resnet")
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, context_length=12))
    torch.manual_seed(0)
    return CLIP(config.with_image_size(32))


def test_resnet_grad_checkpointing_same_gradients_and_statistics():
    batch = random_batch()
    plain, checkpointed = _tiny_resnet(), _tiny_resnet()
    checkpointed.set_grad_checkpointing(True)
    assert checkpointed.visual.grad_checkpointing
    saved = {}
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        sizes = []

        def pack(tensor, sizes=sizes):
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = ContrastiveObjective(model).loss(batch)["loss"]
        saved[name] = sum(sizes)
        loss.backward()
    assert saved["checkpointed"] < 0.5 * saved["plain"]  # activations of the stages are not kept
    for name, grad in gradients(plain).items():
        torch.testing.assert_close(gradients(checkpointed)[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    for (name, buffer), expected in zip(checkpointed.named_buffers(), plain.buffers(), strict=True):
        assert torch.equal(buffer, expected), name  # running statistics updated once, not twice


def test_compile_keeps_names_and_values():
    batch = random_batch()
    model = tiny_model()
    loss = ContrastiveObjective(model).loss(batch)["loss"]
    loss.backward()
    expected = gradients(model)
    compiled = compile_towers(tiny_model(), backend="aot_eager")  # inductor's C++ build: GPU check script
    assert list(compiled.state_dict()) == list(model.state_dict())  # checkpoints unchanged
    compiled_loss = ContrastiveObjective(compiled).loss(batch)["loss"]
    compiled_loss.backward()
    assert compiled_loss.item() == pytest.approx(loss.item(), abs=1e-5)
    for name, grad in expected.items():
        torch.testing.assert_close(gradients(compiled)[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_ema_definition_eval_copy_and_exact_resume():
    model = tiny_model()
    ema = WeightEMA(model, decay=0.9)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    start = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(6):
        optimizer.zero_grad()
        ContrastiveObjective(model).loss(random_batch(seed=step))["loss"].backward()
        optimizer.step()
        before = {k: v.clone() for k, v in ema.model.state_dict().items()}
        decay = min(0.9, (1 + step) / (10 + step))
        ema.update(model)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(
                ema.model.state_dict()[name], before[name] + (1 - decay) * (value - before[name])
            )
        if step == 2:
            saved = {
                "model": {k: v.clone() for k, v in ema.state_dict()["model"].items()},
                "updates": ema.updates,
            }
            weights_at_2 = {k: v.clone() for k, v in model.state_dict().items()}
    assert any((ema.model.state_dict()[k] - start[k]).abs().max() > 0 for k in start)
    resumed = WeightEMA(tiny_model(seed=5), decay=0.9)  # other weights: the checkpoint must overwrite them
    resumed.load_state_dict(saved)
    model.load_state_dict(weights_at_2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3, 6):
        optimizer.zero_grad()
        ContrastiveObjective(model).loss(random_batch(seed=step))["loss"].backward()
        optimizer.step()
        resumed.update(model)
    for name, value in ema.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


FIT = [
    "model.context_length=12",
    "data.num_samples=64",
    "data.batch_size=8",
    "epochs=1",
    "optim.lr=1e-3",
    "optim.warmup_steps=2",
    "checkpoint.every_steps=3",
    "checkpoint.keep_last=5",
    "log.progress=false",
    "log.plot=false",
    "device=cpu",
    "loss.objective=sigmoid",
    "model.patch_dropout=0.25",
    "ema_decay=0.9",
]


class _Abort(Exception):
    pass


def test_fit_sigmoid_patch_dropout_ema_resume_exactly(tmp_path):
    from clipforge.overrides import load_config
    from clipforge.train import TrainConfig, fit
    from clipforge.train.state import load_state

    evaluated = []

    def zeroshot(model):
        evaluated.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"zeroshot_top1": 0.5}

    reference = fit(
        load_config(TrainConfig, None, [*FIT, f"output_dir={tmp_path / 'ref'}"]), zeroshot=zeroshot
    )
    expected = load_state(reference["checkpoint"])
    assert expected["step"] == 8 and expected["ema"]["updates"] == 8
    for name, value in evaluated[-1].items():  # zero-shot ran on the EMA weights, not the trained ones
        assert torch.equal(value, expected["ema"]["model"][name]), name
    assert any(not torch.equal(expected["model"][k], v) for k, v in expected["ema"]["model"].items())
    assert expected["objective_extra"]["logit_bias"] != -10.0  # the sigmoid loss's bias trained

    def abort(event, info):
        if event == "step" and info["step"] == 5:
            raise _Abort

    run = [*FIT, f"output_dir={tmp_path / 'run'}"]
    with pytest.raises(_Abort):
        fit(load_config(TrainConfig, None, run), callbacks=(abort,), zeroshot=zeroshot)
    resumed = fit(load_config(TrainConfig, None, [*run, "checkpoint.resume=auto"]), zeroshot=zeroshot)
    final = load_state(resumed["checkpoint"])
    for part in ("model", "objective_extra"):
        for name, value in expected[part].items():
            assert torch.equal(final[part][name], value), (part, name)
    for name, value in expected["ema"]["model"].items():
        assert torch.equal(final["ema"]["model"][name], value), name


def test_fit_compile_option_same_training(tmp_path, monkeypatch):
    """model.compile=true compiles the towers (inductor; here the quick aot_eager backend) and trains the same."""
    from clipforge.overrides import load_config
    from clipforge.train import TrainConfig, fit, loop
    from clipforge.train.state import load_state

    compiled = []
    monkeypatch.setattr(
        loop, "compile_towers", lambda m: compiled.append(m) or compile_towers(m, "aot_eager")
    )
    base = [*FIT[:-3], "max_steps=3"]
    plain = load_state(
        fit(load_config(TrainConfig, None, [*base, f"output_dir={tmp_path / 'a'}"]))["checkpoint"]
    )
    result = fit(
        load_config(TrainConfig, None, [*base, "model.compile=true", f"output_dir={tmp_path / 'b'}"])
    )
    assert len(compiled) == 1
    state = load_state(result["checkpoint"])
    assert state["model"].keys() == plain["model"].keys()
    for name, value in plain["model"].items():
        torch.testing.assert_close(state["model"][name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_patch_dropout_needs_a_vit(tmp_path):
    from clipforge.overrides import ConfigError, load_config
    from clipforge.train import TrainConfig, fit

    with pytest.raises(ValueError, match="needs a ViT image tower, not ModifiedResNet"):
        fit(load_config(TrainConfig, None, [*FIT, "model.name=tiny-resnet", f"output_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="model.patch_dropout must be in"):
        load_config(TrainConfig, None, ["model.patch_dropout=1.0"]).validate()
