"""Seeded random weights written once per benchmark run, in each library's own format.

OpenAI presets start from open_clip's own random init (BatchNorm statistics randomised); the demo preset,
which open_clip does not know, starts from clipforge's and is given to open_clip as an equivalent
`open_clip.CLIP(**cfg)` (recorded in `<name>.json`). Converters are clipforge.checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.references import randomize_
from clipforge.checkpoints import load_any, save
from clipforge.models import CLIP, CLIPConfig, get_config


def open_clip_cfg(config: CLIPConfig) -> dict:
    """`open_clip.CLIP` keyword arguments for the same architecture."""
    vision, text = config.vision, config.text
    if vision.kind == "resnet":
        vision_cfg = {"layers": list(vision.layers), "head_width": vision.width * 32 // vision.num_heads}
    else:
        vision_cfg = {"layers": vision.layers, "patch_size": vision.patch_size}
        vision_cfg["head_width"] = vision.width // vision.num_heads
        vision_cfg["mlp_ratio"] = vision.mlp_ratio
    vision_cfg.update(width=vision.width, image_size=vision.image_size)
    return {
        "embed_dim": config.embed_dim,
        "vision_cfg": vision_cfg,
        "text_cfg": {
            "context_length": text.context_length,
            "vocab_size": text.vocab_size,
            "width": text.width,
            "heads": text.heads,
            "layers": text.layers,
        },
        "quick_gelu": config.activation == "quick_gelu",
    }


def prepare_weights(model_names: set[str], out: Path) -> None:
    import open_clip
    from transformers import CLIPTokenizerFast

    from clipforge.checkpoints.openai import clipforge_to_openai
    from clipforge.models.config import OPENAI_PRESETS
    from clipforge.tokenizer import write_hf_tokenizer_files

    for name in sorted(model_names):
        config = get_config(name)
        meta = {"image_size": config.vision.image_size, "context_length": config.text.context_length}
        torch.manual_seed(0)
        if name in OPENAI_PRESETS:
            reference = open_clip.create_model(f"{name}-quickgelu")
            for module in reference.modules():  # non-trivial BatchNorm statistics
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
            torch.save(reference.state_dict(), out / f"{name}.openai.pt")
            model = load_any(out / f"{name}.openai.pt")
        else:
            model = randomize_(CLIP(config), seed=0)
            state = {k: v.detach().clone() for k, v in clipforge_to_openai(model.state_dict()).items()}
            torch.save(state, out / f"{name}.openai.pt")
            meta["open_clip_cfg"] = open_clip_cfg(config)
        save(model, out / f"{name}.safetensors", "clipforge")
        if config.vision.kind == "vit":
            save(model, out / f"{name}-hf", "hf")
        (out / f"{name}.json").write_text(json.dumps(meta))
    write_hf_tokenizer_files(out / "hf-tokenizer")
    CLIPTokenizerFast.from_pretrained(out / "hf-tokenizer")  # fail early if unusable
