"""ModifiedResNet image tower: ResNet-D stem, anti-aliased (avg-pool) downsampling, attention pooling."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from clipforge.models.config import VisionConfig


def _conv_bn(cin: int, cout: int, kernel: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)


class Bottleneck(nn.Module):
    """1x1 → 3x3 → (avg-pool if strided) → 1x1; the shortcut also pools before its 1x1 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(inplanes, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3, self.bn3 = _conv_bn(planes, planes * self.expansion, 1)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            conv, bn = _conv_bn(inplanes, planes * self.expansion, 1)
            pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(OrderedDict(pool=pool, conv=conv, bn=bn))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        # In-place ReLU/add (no new activation tensors): neither BatchNorm nor conv backward needs its output.
        out = F.relu_(self.bn1(self.conv1(x)))
        out = F.relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))  # (B, 4P, H/s, W/s)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu_(out.add_(identity))


def _checkpointed(stage: nn.Module, x: Tensor) -> Tensor:
    """stage(x) with activations recomputed in backward. The recompute sees the same batch, hence the same
    BatchNorm batch statistics, but must not update the running statistics a second time: it runs with
    momentum 0 (running <- 1 * running + 0 * batch: unchanged) and the batch count is put back."""
    calls = []

    def run(inputs: Tensor) -> Tensor:
        if not calls:
            calls.append(True)
            return stage(inputs)
        norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.momentum = 0.0
        try:
            return stage(inputs)
        finally:
            for norm, momentum in zip(norms, momenta, strict=True):
                norm.momentum = momentum
                if norm.training:
                    norm.num_batches_tracked.sub_(1)

    return checkpoint(run, x, use_reentrant=False)


class AttentionPool2d(nn.Module):
    """Replaces global average pooling: the mean feature queries all positions."""

    def __init__(self, spatial_dim: int, width: int, heads: int, output_dim: int):
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(spatial_dim**2 + 1, width) / width**0.5)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, output_dim)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W)
        B, C = x.shape[:2]
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (B, 1+HW, C)
        x = x + self.positional_embedding.to(x.dtype)  # learned 2-D position
        Dh = C // self.heads
        q = self.q_proj(x[:, :1]).view(B, 1, self.heads, Dh).transpose(1, 2)  # (B, H, 1, Dh)
        k = self.k_proj(x).view(B, -1, self.heads, Dh).transpose(1, 2)  # (B, H, 1+HW, Dh)
        v = self.v_proj(x).view(B, -1, self.heads, Dh).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, 1, Dh)
        return self.c_proj(out.transpose(1, 2).reshape(B, C))  # (B, out_dim): the query token


class ModifiedResNet(nn.Module):
    def __init__(self, config: VisionConfig, embed_dim: int):
        super().__init__()
        if not isinstance(config.layers, tuple) or len(config.layers) != 4:
            raise ValueError(f"ResNet layers must be 4 stage depths, got {config.layers!r}")
        width = config.width
        # ResNet-D stem: three 3x3 convs (the first strided) and an average pool instead of a max pool.
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2, self.bn2 = _conv_bn(width // 2, width // 2, 3)
        self.conv3, self.bn3 = _conv_bn(width // 2, width, 3)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_stage(width, config.layers[0])
        self.layer2 = self._make_stage(width * 2, config.layers[1], stride=2)
        self.layer3 = self._make_stage(width * 4, config.layers[2], stride=2)
        self.layer4 = self._make_stage(width * 8, config.layers[3], stride=2)
        feature_width = width * 32
        self.attnpool = AttentionPool2d(config.image_size // 32, feature_width, config.num_heads, embed_dim)
        self.grad_checkpointing = False  # keep only each stage's input; recompute the rest in backward
        self._init_weights()

    def _make_stage(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        std = self.attnpool.c_proj.in_features**-0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                nn.init.zeros_(block.bn3.weight)  # each residual branch starts as the identity

    @property
    def feature_dim(self) -> int:
        return self.attnpool.c_proj.in_features

    def trunk(self, images: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 32W, H/32, W/32)
        x = F.relu_(self.bn1(self.conv1(images)))
        x = F.relu_(self.bn2(self.conv2(x)))
        x = F.relu_(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = _checkpointed(stage, x) if self.grad_checkpointing and x.requires_grad else stage(x)
        return x

    def features(self, images: Tensor) -> Tensor:
        """Globally average-pooled trunk features (B, 32W): the pre-projection linear-probe input."""
        return self.trunk(images).mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        if self.channels_last:  # match the weights' layout, so no conv converts on its own
            images = images.contiguous(memory_format=torch.channels_last)
        return self.attnpool(self.trunk(images))  # (B, E)

    @property
    def channels_last(self) -> bool:
        """Whether the weights are in channels-last (NHWC) layout: oneDNN's fast path on CPU."""
        weight = self.conv1.weight
        return weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last)
