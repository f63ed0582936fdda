"""The architecture configs (config.json, compact) of the Hugging Face text encoders open_clip's pretrained
configs name by hub id (`text_cfg.hf_model_name`), as data.

open_clip rebuilds these towers with `AutoConfig.from_pretrained(hf_model_name)`, which needs the internet;
clipforge rebuilds them from the JSON recorded here (`TextConfig.hf_config_json`), so an open_clip config with
an HF text tower maps to a preset offline. Only the fields that fix the architecture and the padding id are
recorded; the rest are transformers' defaults. Sizes as published on the Hub: roberta-base and xlm-roberta-base
12 x 768 (FFN 3072, 12 heads), xlm-roberta-large 24 x 1024 (FFN 4096, 16 heads); RoBERTa's 514 positions and
one token type; NLLB-200 (M2M-100, only its encoder is used, as open_clip does): d_model 1024, 16 heads,
600M = 12 layers FFN 4096, 1.3B = 24 layers FFN 8192 (0.62B / 1.37B parameters in all, as published),
256,206 tokens, scaled sinusoidal positions. A hub id not listed here is refused by name.
"""

from __future__ import annotations

import json


def _compact(**fields) -> str:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def _roberta(model_type: str, vocab_size: int, width: int, layers: int, heads: int) -> str:
    return _compact(model_type=model_type, vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                    num_attention_heads=heads, intermediate_size=4 * width, max_position_embeddings=514,
                    type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2, hidden_act="gelu")  # fmt: skip


def _nllb(layers: int, ffn: int) -> str:
    return _compact(model_type="m2m_100", vocab_size=256206, d_model=1024, encoder_layers=layers,
                    decoder_layers=layers, encoder_attention_heads=16, decoder_attention_heads=16,
                    encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=1024,
                    activation_function="relu", scale_embedding=True, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2, decoder_start_token_id=2, is_encoder_decoder=True)  # fmt: skip


HF_TEXT_CONFIGS: dict[str, str] = {
    "roberta-base": _roberta("roberta", 50265, 768, 12, 12),
    "xlm-roberta-base": _roberta("xlm-roberta", 250002, 768, 12, 12),
    "xlm-roberta-large": _roberta("xlm-roberta", 250002, 1024, 24, 16),
    "facebook/nllb-200-distilled-600M": _nllb(12, 4096),
    "facebook/nllb-200-distilled-1.3B": _nllb(24, 8192),
}
