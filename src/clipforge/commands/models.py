"""`clipforge models`: the preset table, or with --pretrained the registry of pretrained weights."""

from __future__ import annotations

import argparse

import torch

from clipforge.flops import model_gflops
from clipforge.models import CLIP, PRESETS
from clipforge.results import markdown_table


def preset_rows() -> list[dict]:
    rows = []
    for name, config in PRESETS.items():
        with torch.device("meta"):
            model = CLIP(config)
        image_gflops, text_gflops = model_gflops(config)
        rows.append(
            {
                "model": name,
                "tower": config.vision.kind,
                "params_M": round(model.num_parameters() / 1e6, 2),
                "image_size": config.vision.image_size,
                "embed_dim": config.embed_dim,
                "image_GFLOPs": round(image_gflops, 2),
                "text_GFLOPs": round(text_gflops, 2),
            }
        )
    return rows


def pretrained_rows() -> list[dict]:
    """One row per registry entry (every open_clip pair): where its weights come from and whether a preset
    builds its architecture."""
    from clipforge.checkpoints.registry import PRETRAINED

    return [
        {
            "model": entry.model,
            "tag": entry.tag,
            "source": entry.source,
            "sha256": entry.sha256[:8] or "-",
            "activation": entry.activation,
            "resize": entry.preprocess.resize_mode if entry.preprocess else "-",
            "buildable": entry.model in PRESETS,
        }
        for entry in PRETRAINED.values()
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="clipforge models", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--pretrained", action="store_true", help="list the pretrained (model, tag) registry")
    args = parser.parse_args(argv)
    rows = pretrained_rows() if args.pretrained else preset_rows()
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
    else:
        print(markdown_table(rows, floatfmt=".2f"))
    return {"pretrained" if args.pretrained else "models": rows}
