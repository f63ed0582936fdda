"""The tokenizer a model needs, read from its config: OpenAI's BPE, or the tokenizer.json of an HF text tower."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=8)
def _hf_tokenizer(name: str, context_length: int):
    from clipforge.local_weights import resolve_weights
    from clipforge.tokenizer.hf import HFTokenizer

    return HFTokenizer(resolve_weights(name), context_length=context_length, truncate=True)


def tokenizer_for(model_or_config):
    """A callable texts -> (N, context_length) ids for a CLIP model, a CLIPConfig or a preset name;
    like open_clip's get_tokenizer it truncates long texts. Cached: cheap to call per batch."""
    from clipforge.models.config import CLIPConfig, get_config

    config = model_or_config
    if isinstance(config, str):
        config = get_config(config)
    elif not isinstance(config, CLIPConfig):
        config = config.config  # a CLIP model
    text = config.text
    if text.hf_tokenizer_name:  # an HF text tower, or a native one trained with an HF tokenizer (open_clip's)
        return _hf_tokenizer(text.hf_tokenizer_name, text.context_length)
    if text.kind == "hf":
        raise ValueError("text.hf_tokenizer_name is empty: an HF text tower needs its tokenizer's folder")
    from clipforge.tokenizer import default_tokenizer

    return default_tokenizer(text.context_length)  # the shared BPE (truncating, picklable)
