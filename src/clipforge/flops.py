"""Forward FLOPs of a config, counted by torch's FlopCounterMode on meta tensors (no memory, no time)."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from clipforge.models import CLIP, CLIPConfig


@lru_cache(maxsize=64)
def model_gflops(config: CLIPConfig, text_length: int | None = None) -> tuple[float, float]:
    """(image GFLOPs, text GFLOPs) per sample; text at full context unless `text_length` is given."""
    with torch.device("meta"):
        model = CLIP(config).eval()
        images = torch.empty(1, 3, config.vision.image_size, config.vision.image_size)
        length = text_length or config.text.context_length
        text = torch.zeros(1, config.text.context_length, dtype=torch.long)
    model.text.trim_to_longest = False
    text = text[:, :length]
    counts = []
    for fn, arg in ((model.encode_image, images), (model.encode_text, text)):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn(arg)
        counts.append(counter.get_total_flops() / 1e9)
    return counts[0], counts[1]
