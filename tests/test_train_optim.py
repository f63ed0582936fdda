"""AdamW groups (no decay on gains, biases, embeddings, logit_scale), schedule values, locked towers."""

from __future__ import annotations

import math

import pytest
import torch

from clipforge.models import CLIP, get_config
from clipforge.train.optim import build_optimizer, lock_towers, param_groups
from clipforge.train.schedule import LRSchedule, cosine_with_warmup


@pytest.mark.parametrize("preset", ["tiny-vit", "tiny-resnet"])
def test_weight_decay_exclusions(preset):
    model = CLIP(get_config(preset))
    decay, no_decay = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert decayed | skipped == set(names.values()) and not decayed & skipped
    assert {"logit_scale", "text.token_embedding.weight", "text.positional_embedding"} <= skipped
    assert all(not n.endswith(".bias") for n in decayed)
    assert all("ln_" not in n and ".bn" not in n for n in decayed)  # LayerNorm / BatchNorm gains
    assert "text.transformer.blocks.0.attn.qkv.weight" in decayed and "text.text_projection" in decayed
    if preset == "tiny-vit":
        assert {"visual.class_embedding", "visual.positional_embedding"} <= skipped
        assert "visual.patch_embed.weight" in decayed


def test_cosine_schedule_with_warmup():
    values = [cosine_with_warmup(s, 1.0, 10, 110) for s in range(111)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert (
        values[10] == pytest.approx(1.0)
        and values[60] == pytest.approx(0.5)
        and values[110] == pytest.approx(0.0)
    )
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert cosine_with_warmup(60, 1.0, 10, 110, min_lr=0.2) == pytest.approx(0.6)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    schedule = LRSchedule(optimizer, "cosine", 1.0, 10, 110)
    for _ in range(60):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    again = LRSchedule(optimizer, "cosine", 1.0, 10, 110)
    again.load_state_dict(schedule.state_dict())
    assert again.last_lr == pytest.approx(0.5) and not math.isnan(again.last_lr)


def test_locked_image_tower_gets_no_updates():
    model = CLIP(get_config("tiny-vit"))
    lock_towers(model, lock_image=True, lock_text=False)
    optimizer = build_optimizer(model, 1e-2, 0.1, (0.9, 0.98), 1e-6)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in trained for p in model.visual.parameters())
    assert all(id(p) in trained for p in model.text.parameters())
