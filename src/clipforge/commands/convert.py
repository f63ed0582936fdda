"""`clipforge convert SRC DST --to FMT`: convert between clipforge, OpenAI, open_clip and HF formats."""

from __future__ import annotations

import argparse

import torch

from clipforge.checkpoints import FORMATS, detect_format, load_any, save
from clipforge.checkpoints.openai import preset_name
from clipforge.commands.options import user_path

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "keep": None}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="clipforge convert", description=__doc__)
    parser.add_argument("src", type=user_path, help="checkpoint file or HF directory (format auto-detected)")
    parser.add_argument("dst", type=user_path, help="output file (or directory for --to hf)")
    parser.add_argument("--to", required=True, choices=FORMATS, help="output format")
    parser.add_argument(
        "--model", default=None, help="preset name for OpenAI/open_clip files (default: inferred from shapes)"
    )
    parser.add_argument("--dtype", default="fp32", choices=list(_DTYPES), help="weights dtype to write")
    args = parser.parse_args(argv)
    source_format = detect_format(args.src)
    model = load_any(args.src, config=args.model, dtype=_DTYPES[args.dtype])
    written = save(model, args.dst, args.to)
    result = {
        "src": args.src,
        "dst": str(written),
        "from": source_format,
        "to": args.to,
        "model": preset_name(model.config) or "custom",
        "params": model.num_parameters(),
        "dtype": str(model.dtype).removeprefix("torch."),
    }
    print(
        f"{result['from']} -> {result['to']}: {result['dst']} ({result['model']}, {result['params']:,} params)"
    )
    return result
