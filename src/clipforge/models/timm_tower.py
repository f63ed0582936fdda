"""Image tower backed by any timm architecture: a timm trunk, optional pooling, a projection head.

Built like open_clip's TimmModel (same `trunk` / `head` submodule names and the same `timm_pool` /
`timm_proj` meanings), so its timm-tower configs and checkpoints map onto this class name for name.
The trunk is built without weights; pretrained ones come in through `clipforge.checkpoints.towers`.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from clipforge.models.config import VisionConfig

ATTENTION_POOLS = ("abs_attn", "rot_attn")


def _import_timm():
    try:
        import timm
    except ImportError as err:  # pragma: no cover - the `towers` extra installs it
        raise ImportError(
            "vision.kind='timm' needs the timm package: pip install 'clipforge[towers]'"
        ) from err
    return timm


class TimmVisionTower(nn.Module):
    """(B, 3, H, W) images -> (B, E) embeddings through `trunk` (timm) and `head` (pool / projection)."""

    def __init__(self, config: VisionConfig, embed_dim: int):
        super().__init__()
        timm = _import_timm()
        if not config.timm_model_name:
            raise ValueError("vision.timm_model_name is required when vision.kind='timm' (e.g. 'resnet50')")
        kwargs = {} if config.timm_drop_path is None else {"drop_path_rate": config.timm_drop_path}
        pool, proj = config.timm_pool, config.timm_proj
        attention_pool = pool in ATTENTION_POOLS
        if proj == "none" and not attention_pool:
            # timm's own classifier is the projection (to embed_dim), as in open_clip
            self.trunk = timm.create_model(
                config.timm_model_name, num_classes=embed_dim, global_pool=pool, **kwargs
            )
            width = embed_dim
        else:
            self.trunk = timm.create_model(config.timm_model_name, **kwargs)
            self.trunk.reset_classifier(
                0, **({"global_pool": ""} if attention_pool else ({"global_pool": pool} if pool else {}))
            )
            width = self.trunk.num_features
        head: OrderedDict[str, nn.Module] = OrderedDict()
        if attention_pool:
            head["pool"] = self._attention_pool(pool, width, embed_dim)
            width = embed_dim
        if proj == "linear":
            head["drop"] = nn.Dropout(config.timm_drop)
            head["proj"] = nn.Linear(width, embed_dim, bias=config.timm_proj_bias)
        elif proj == "mlp":
            from timm.layers import Mlp

            head["mlp"] = Mlp(
                width,
                2 * embed_dim,
                embed_dim,
                drop=(config.timm_drop, 0),
                bias=(True, config.timm_proj_bias),
            )
        self.head = nn.Sequential(head)
        self.image_size = config.image_size

    def _attention_pool(self, pool: str, width: int, embed_dim: int) -> nn.Module:
        from timm.layers import AttentionPool2d, RotAttentionPool2d

        if pool == "rot_attn":
            return RotAttentionPool2d(width, out_features=embed_dim)
        feat_size = self.trunk.default_cfg.get("pool_size")
        return AttentionPool2d(width, feat_size=feat_size, out_features=embed_dim)

    @property
    def feature_dim(self) -> int:
        return self.trunk.num_features if self.trunk.num_classes == 0 else self.trunk.num_classes

    def features(self, images: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, D)
        """The trunk's pooled features before the projection (the linear-probe input)."""
        return self.trunk(images)

    def project(self, features: Tensor) -> Tensor:  # (B, D) trunk features -> (B, E)
        return self.head(features)

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, E)
        return self.head(self.trunk(images))

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        if hasattr(self.trunk, "set_grad_checkpointing"):
            self.trunk.set_grad_checkpointing(enabled)

    def lock(self, unlocked_groups: int = 0) -> None:
        """Freeze the trunk except its last `unlocked_groups` layer groups (timm's `group_matcher`: stem,
        blocks or stages, head); the projection head always trains. The trainer keeps frozen submodules in
        eval mode (BatchNorm statistics and dropout fixed): `clipforge.train.optim.keep_locked_in_eval`."""
        self.trunk.requires_grad_(False)
        if unlocked_groups <= 0:
            return
        from timm.models import group_parameters

        groups = group_parameters(self.trunk, self.trunk.group_matcher())  # {group id: [param names]}
        for gid in sorted(groups)[-unlocked_groups:]:
            for name in groups[gid]:
                self.trunk.get_parameter(name).requires_grad_(True)
