"""Text tower backed by a Hugging Face `transformers` encoder (BERT, RoBERTa, MiniLM, NLLB's encoder, ...).

Like open_clip's HFTextEncoder: the encoder's token states are pooled (`hf_pooler_type`) and projected
(`hf_proj_type`) into the joint space; the attention mask is `ids != pad_token_id`. The architecture is
rebuilt from the config JSON the TextConfig carries, so no folder or hub is needed to build it; weights come
in through `clipforge.checkpoints.towers`.
"""

from __future__ import annotations

import json

import torch
from torch import Tensor, nn

from clipforge.models.config import TextConfig


def _import_transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - the `towers` extra installs it
        raise ImportError(
            "text.kind='hf' needs the transformers package: pip install 'clipforge[towers]'"
        ) from err
    return transformers


def build_hf_encoder(config_json: str, add_pooling_layer: bool) -> nn.Module:
    """A randomly initialised encoder of the architecture in `config_json` (a config.json's text)."""
    transformers = _import_transformers()
    data = json.loads(config_json)
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise ValueError("text.hf_config_json has no 'model_type' (expected a Hugging Face config.json)")
    hf_config = transformers.AutoConfig.for_model(model_type, **data)
    kwargs = (
        {"add_pooling_layer": add_pooling_layer} if model_type in ("bert", "roberta", "xlm-roberta") else {}
    )
    model = transformers.AutoModel.from_config(hf_config, **kwargs)
    if getattr(
        hf_config, "is_encoder_decoder", False
    ):  # NLLB (M2M-100): its encoder embeds text, as in open_clip
        return model.get_encoder()
    return model


def masked_pool(hidden: Tensor, mask: Tensor, pooler_type: str, pooler_output: Tensor | None) -> Tensor:
    """(B, L, W) token states, (B, L) mask -> (B, W)."""
    if pooler_type == "mean_pooler":
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    if pooler_type == "max_pooler":
        return hidden.masked_fill(~mask.unsqueeze(-1), -torch.inf).max(dim=1).values
    if pooler_type == "cls_pooler" and pooler_output is not None:
        return pooler_output  # the encoder's own pooler (tanh dense on [CLS])
    return hidden[:, 0]  # cls_pooler without a pooler layer, cls_last_hidden_state_pooler


class HFTextTower(nn.Module):
    """(B, L) token ids (right-padded with pad_token_id) -> (B, E) embeddings."""

    def __init__(self, config: TextConfig, embed_dim: int):
        super().__init__()
        if not config.hf_config_json:
            raise ValueError(
                "text.hf_config_json is required when text.kind='hf' (the encoder's config.json; "
                "clipforge.checkpoints.towers.hf_text_config(folder) fills it)"
            )
        self.pooler_type = config.hf_pooler_type
        self.context_length = config.context_length
        self.transformer = build_hf_encoder(config.hf_config_json, config.hf_pooler_type == "cls_pooler")
        self.pad_token_id = int(getattr(self.transformer.config, "pad_token_id", 0) or 0)
        width = self.transformer.config.hidden_size
        if config.hf_proj_type == "linear":
            self.proj = nn.Linear(width, embed_dim, bias=False)
        elif config.hf_proj_type == "mlp":
            hidden = (width + embed_dim) // 2
            self.proj = nn.Sequential(
                nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False)
            )
        elif width == embed_dim:
            self.proj = nn.Identity()
        else:
            raise ValueError(
                f"text.hf_proj_type='none' needs the encoder width ({width}) to equal embed_dim ({embed_dim}); "
                "use 'linear' or 'mlp'"
            )

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.transformer.get_input_embeddings()

    def features(self, text: Tensor) -> Tensor:  # (B, L) -> (B, W) pooled, before the projection
        mask = text != self.pad_token_id  # (B, L)
        if not torch.jit.is_tracing():  # a traced graph (ONNX export) would bake this length in: keep all L
            longest = int(mask.sum(dim=1).max()) if text.shape[0] else 0
            text, mask = text[:, : max(longest, 1)], mask[:, : max(longest, 1)]  # exact: padding is masked
        out = self.transformer(input_ids=text, attention_mask=mask.long())
        return masked_pool(out.last_hidden_state, mask, self.pooler_type, getattr(out, "pooler_output", None))

    def project(self, features: Tensor) -> Tensor:  # (B, W) pooled features -> (B, E)
        return self.proj(features)

    def forward(self, text: Tensor) -> Tensor:  # (B, L) -> (B, E)
        return self.proj(self.features(text))

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        if enabled:
            self.transformer.gradient_checkpointing_enable()
        else:
            self.transformer.gradient_checkpointing_disable()

    def encoder_layers(self) -> list[nn.Module]:
        """The embeddings then each transformer layer, in order (the units `lock` unlocks from the end)."""
        encoder = getattr(self.transformer, "encoder", self.transformer)
        layers = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
        if layers is None:
            raise ValueError(f"{type(self.transformer).__name__}: no encoder.layer list to unlock layers of")
        return [self.transformer.get_input_embeddings(), *layers]

    def lock(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the encoder except its last `unlocked_layers` transformer layers; pooler layer and projection
        train. `freeze_layer_norm=False` leaves LayerNorm gains/biases of frozen layers trainable (open_clip)."""
        modules = self.encoder_layers()
        frozen = modules[: len(modules) - unlocked_layers] if unlocked_layers > 0 else [self.transformer]
        if unlocked_layers > 0:
            embeddings = getattr(self.transformer, "embeddings", None)
            if embeddings is not None and frozen and frozen[0] is self.transformer.get_input_embeddings():
                frozen[0] = embeddings  # the whole embedding block (word, position, type, LayerNorm)
        for module in frozen:
            for name, param in module.named_parameters():
                is_norm = "LayerNorm" in name.split(".") or "layer_norm" in name
                param.requires_grad_(not freeze_layer_norm and is_norm)
