"""Zero-shot classification: prompts as data and the prompt-ensembled text classifier."""

from clipforge.zeroshot.classifier import build_classifier, classify, encode_images, zeroshot_logits

__all__ = ["build_classifier", "classify", "encode_images", "zeroshot_logits"]
