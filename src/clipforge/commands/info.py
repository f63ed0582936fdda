"""`clipforge info CHECKPOINT`: format, architecture, parameter count, dtype and config of a checkpoint."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from clipforge.checkpoints import detect_format, load_any, load_checkpoint
from clipforge.checkpoints.openai import preset_name
from clipforge.commands.options import user_path


def describe_checkpoint(path: str, model_name: str | None = None) -> dict:
    """Plain-value description of a checkpoint file or HF directory."""
    fmt = detect_format(path)
    model = load_any(path, config=model_name, dtype=None)
    dtypes = Counter(str(p.dtype).removeprefix("torch.") for p in model.parameters())
    info = {
        "path": str(path),
        "format": fmt,
        "architecture": preset_name(model.config) or "custom",
        "image_tower": model.config.vision.kind,
        "params": model.num_parameters(),
        "dtype": dtypes.most_common(1)[0][0],
        "dtypes": dict(dtypes),
        "config": model.config.to_dict(),
    }
    if fmt == "clipforge":
        info["extra_keys"] = sorted(load_checkpoint(path).extra)
    return info


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="clipforge info", description=__doc__)
    parser.add_argument("checkpoint", type=user_path, help="checkpoint file or HF directory")
    parser.add_argument("--model", default=None, help="preset name for files without a config")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    info = describe_checkpoint(args.checkpoint, args.model)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key in ("path", "format", "architecture", "image_tower", "params", "dtype"):
            value = f"{info[key]:,}" if key == "params" else info[key]
            print(f"{key:>12}: {value}")
        print(f"{'config':>12}: {json.dumps(info['config'])}")
    return info
