"""Flags shared by the subcommands that need a model: --model/--pretrained/--checkpoint/--device."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from clipforge.device import DEFAULT_DEVICE


def user_path(text: str) -> str:
    """argparse `type` for every path flag: `~` and `~user` expanded, as a shell would."""
    return os.path.expanduser(text)


def add_model_args(
    parser: argparse.ArgumentParser, default_model: str = "ViT-B-32", device: bool = True
) -> None:
    parser.add_argument("--model", default=default_model, help=f"preset name (default {default_model})")
    parser.add_argument("--pretrained", help="weights for --model: a tag such as 'openai', or a file")
    parser.add_argument(
        "--checkpoint", type=user_path, help="checkpoint file or HF folder (any format); overrides --model"
    )
    if device:
        help_ = "auto (CUDA when available, else CPU), cpu, cuda, cuda:1"
        parser.add_argument("--device", default=DEFAULT_DEVICE, help=help_)


def model_spec(args: argparse.Namespace) -> tuple[str, str | None]:
    """(what to load, pretrained) from the model flags: the checkpoint if given (it must exist)."""
    if args.checkpoint:
        if not Path(args.checkpoint).expanduser().exists():
            raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file or folder")
        if args.pretrained:
            raise ValueError("--pretrained applies to --model; a --checkpoint carries its own weights")
        return args.checkpoint, None
    return args.model, args.pretrained


def load_model_from(args: argparse.Namespace):
    """(model, preprocess) through the one front door, `clipforge.factory.load_model`."""
    from clipforge.factory import load_model

    spec, pretrained = model_spec(args)
    return load_model(spec, pretrained, args.device)
