"""Inference-only rewrites that keep outputs equal to tolerance: BN folding, channels-last."""

from __future__ import annotations

import copy

import torch
from torch import nn

from clipforge.models.clip import CLIP
from clipforge.models.resnet import ModifiedResNet


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv whose output equals bn(conv(x)) in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=True,
    ).to(conv.weight.device, conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale[:, None, None, None])
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    return fused


def _fold_resnet(visual: ModifiedResNet) -> None:
    pairs = [(visual, "conv1", "bn1"), (visual, "conv2", "bn2"), (visual, "conv3", "bn3")]
    for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        for block in stage:
            pairs += [(block, "conv1", "bn1"), (block, "conv2", "bn2"), (block, "conv3", "bn3")]
            if block.downsample is not None:
                pairs.append((block.downsample, "conv", "bn"))
    for owner, conv_name, bn_name in pairs:
        setattr(owner, conv_name, fold_batchnorm(getattr(owner, conv_name), getattr(owner, bn_name)))
        setattr(owner, bn_name, nn.Identity())


def optimize_for_inference(
    model: CLIP, channels_last: bool = True, inplace: bool = False, compile: bool = False
) -> CLIP:
    """An eval-only model: ResNet BatchNorms folded into convs, channels-last memory layout, and optionally
    both towers compiled with `torch.compile` (slow first call per input shape; needs a C++ compiler on CPU).

    Its state_dict no longer matches the checkpoint format: keep the original for saving/training. By default
    the model is copied; `inplace=True` rewrites `model` itself (half the peak memory when the original is not
    needed any more)."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if isinstance(model.visual, ModifiedResNet):
        _fold_resnet(model.visual)
        if channels_last:
            model.visual.to(memory_format=torch.channels_last)
    if compile:
        model.visual.compile(dynamic=False)
        model.text.compile(dynamic=True)  # trimmed texts have a new length almost every batch
    return model
