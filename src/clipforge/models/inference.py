"""Inference-only rewrites that keep outputs equal to tolerance: BN folding, channels-last, ViT patch
embedding as one GEMM, QuickGELU as an in-place SiLU with its scale folded into the MLP weights."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from clipforge.models.clip import CLIP
from clipforge.models.resnet import ModifiedResNet
from clipforge.models.transformer import MLP, QuickGELU
from clipforge.models.vit import VisionTransformer

QUICK_GELU_SCALE = 1.702


class PatchMatmul(nn.Module):
    """A ViT patch embedding (conv with kernel = stride = patch, no bias) as one GEMM over flattened patches:
    the same sums as the conv, without oneDNN's conv setup (5 % of a ViT-B/32 batch at 1 thread)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.patch = conv.kernel_size[0]
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).t().contiguous(), requires_grad=False)

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, width, H/P, W/P), a view
        B, C, H, W = images.shape
        P = self.patch
        patches = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)  # (B, g, g, C, P, P)
        out = patches.reshape(-1, C * P * P) @ self.weight  # (B*g*g, width)
        return out.view(B, H // P, W // P, -1).permute(0, 3, 1, 2)


class ScaledSiLU(nn.Module):
    """silu_ in place: QuickGELU(h) = silu(1.702 h) / 1.702, with 1.702 folded into fc1 and 1/1.702 into fc2
    (`_fold_quick_gelu`), so the activation is one pass over the hidden tensor instead of three."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.silu(x, inplace=True)


@torch.no_grad()
def _fold_quick_gelu(module: nn.Module) -> None:
    for mlp in module.modules():
        if isinstance(mlp, MLP) and isinstance(mlp.act, QuickGELU):
            mlp.fc1.weight.mul_(QUICK_GELU_SCALE)
            mlp.fc1.bias.mul_(QUICK_GELU_SCALE)
            mlp.fc2.weight.div_(QUICK_GELU_SCALE)
            mlp.act = ScaledSiLU()


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
    if isinstance(model.visual, VisionTransformer) and isinstance(model.visual.patch_embed, nn.Conv2d):
        model.visual.patch_embed = PatchMatmul(model.visual.patch_embed)
    _fold_quick_gelu(model)
    if compile:
        model.visual.compile(dynamic=False)
        model.text.compile(dynamic=True)  # trimmed texts have a new length almost every batch
    return model
